import type { MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Logger } from './log.js';

/** Which listener answered: the public API or the admin API. */
export type Listener = 'api' | 'admin';

/** Error bodies are small (`{ error: { code, message } }`); a larger one is not read for its code. */
const MAX_ERROR_BODY = 16 * 1024;

function clientOf(c: Parameters<MiddlewareHandler>[0]): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * The route pattern that answered (`/v1/admin/secrets/:name`), never the path asked for: a path
 * carries secret names (admin routes) and whatever a client puts in it; a query string is never
 * logged. null when no route matched (404).
 */
function routeOf(c: Parameters<MiddlewareHandler>[0]): string | null {
  const route = matchedRoutes(c)[c.req.routeIndex];
  return route && route.path !== '*' && route.path !== '/*' ? route.path : null;
}

/** The stable error code of an error answer (`{ error: { code } }`), read from a copy of the body. */
async function errorCodeOf(res: Response): Promise<string | null> {
  if (res.status < 400 || !(res.headers.get('content-type') ?? '').includes('json')) return null;
  const length = Number(res.headers.get('content-length') ?? '0');
  if (length > MAX_ERROR_BODY) return null;
  try {
    const body = (await res.clone().json()) as { error?: { code?: unknown } };
    const code = body.error?.code;
    return typeof code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(code) ? code : null;
  } catch {
    return null;
  }
}

/**
 * One log line per HTTP request, written once the answer is ready: listener, method, route pattern,
 * status, error code, latency and client address. Nothing from the body, headers or query is logged
 * (they carry attestation documents, tokens, secret names); success bodies are never read.
 */
export function requestLogger(log: Logger, listener: Listener): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    try {
      await next();
    } finally {
      const status = c.res.status;
      // A success carries no code: no body copy, and no promise to wait for.
      const code = status < 400 ? null : await errorCodeOf(c.res);
      // Always info: status and code carry the outcome; error lines stay for incidents (one per incident, not per request).
      log('info', 'request', {
        listener,
        method: c.req.method,
        route: routeOf(c),
        status,
        code,
        latencyMs: Math.round((performance.now() - started) * 1000) / 1000,
        client: clientOf(c),
      });
    }
  };
}
