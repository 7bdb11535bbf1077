import { INJECT_ROUTE, isInjectRoute, SECRET_NAME } from '../policy/schema.js';

/** A call's target, split: the credential, the upstream path (no query) and the raw query (passed on, never audited). */
export interface CallTarget {
  readonly name: string;
  readonly path: string;
  readonly query: string;
}

/**
 * Splits `<name>/<path>?<query>` (what follows the call prefix). Undefined when the name is not a secret
 * name or the path is not one an allow-list can speak for (dot or empty segments, encoded slashes,
 * characters outside RFC 3986 path characters): such calls are refused, never normalised.
 */
export function callTarget(rest: string): CallTarget | undefined {
  const q = rest.indexOf('?');
  const pathPart = q === -1 ? rest : rest.slice(0, q);
  const query = q === -1 ? '' : rest.slice(q);
  const slash = pathPart.indexOf('/');
  const name = slash === -1 ? pathPart : pathPart.slice(0, slash);
  const path = slash === -1 ? '/' : pathPart.slice(slash);
  if (!SECRET_NAME.test(name)) return undefined;
  // The same rules as an allow-listed route (GET is only a stand-in method here).
  if (!isInjectRoute(`GET ${path}`) || path.endsWith('*')) return undefined;
  if (query.length > 8192 || /[\s\u0000-\u001f\u007f]/.test(query)) return undefined;
  return { name, path, query };
}

/** True when `METHOD path` is allowed by one of `routes` ("METHOD /exact" or "METHOD /prefix*"). */
export function routeAllowed(routes: readonly string[], method: string, path: string): boolean {
  return routes.some((route) => {
    const m = INJECT_ROUTE.exec(route);
    if (!m || m[1] !== method) return false;
    return m[3] === '*' ? path.startsWith(m[2]!) : path === m[2];
  });
}
