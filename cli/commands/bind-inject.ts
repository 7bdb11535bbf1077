/** `keygate bind NAME --inject ...`: the flags of an inject binding (credential substitution, design.md 5b). */
import { parseInject, SchemaError } from '../../broker/policy/schema.js';
import type { InjectRule } from '../../broker/policy/types.js';
import { UsageError } from '../errors.js';
import { parseDuration } from '../parse.js';

export const INJECT_OPTIONS = {
  inject: { type: 'boolean' },
  upstream: { type: 'string' },
  header: { type: 'string' },
  'allow-route': { type: 'string', multiple: true },
  budget: { type: 'string' },
  'max-body': { type: 'string' },
  'allow-status': { type: 'string' },
} as const;

export const INJECT_USAGE = `  --inject           credential substitution: the value is never released (POST
                     /v1/secrets answers POLICY_DENIED); enclaves call the upstream
                     through the broker's gateway, which adds it. With:
    --upstream URL       https origin, e.g. https://api.openai.com
    --header 'H: T'      header set on each call, T containing {value} once,
                         e.g. 'Authorization: Bearer {value}'
    --allow-route R      'METHOD /path' exact, or 'METHOD /prefix*' (repeatable)
    --budget N/WINDOW    calls per window per enclave identity: 600/min, 10/s,
                         5000/h, 100/30s
    --max-body N         largest request body in bytes (default 1048576)
    --allow-status L     only pass upstream answers with these statuses (200,201)
`;

const WINDOWS: Record<string, number> = { s: 1, sec: 1, second: 1, min: 60, minute: 60, h: 3600, hour: 3600, d: 86_400, day: 86_400 };
const DEFAULT_MAX_BODY = 1024 * 1024;

/** `600/min`, `10/s`, `100/30s`: requests per window (seconds). */
export function parseBudget(text: string): { requests: number; windowSeconds: number } {
  const m = /^(\d{1,10})\/(.+)$/.exec(text.trim());
  if (!m) throw new UsageError(`--budget: expected N/WINDOW such as 600/min, got "${text}"`);
  const windowSeconds = WINDOWS[m[2]!] ?? Math.round(parseDuration(m[2]!, '--budget') / 1000);
  return { requests: Number(m[1]), windowSeconds };
}

/** `'Authorization: Bearer {value}'`: the header name (lower-cased) and its template. */
function parseHeader(text: string): { header: string; template: string } {
  const at = text.indexOf(':');
  if (at <= 0) throw new UsageError(`--header: expected 'Name: template with {value}', got "${text}"`);
  return { header: text.slice(0, at).trim().toLowerCase(), template: text.slice(at + 1).trim() };
}

/**
 * The inject rule the flags describe, validated by the binding schema (so the CLI and the store agree), or
 * undefined without --inject (then no inject flag may be given).
 */
export function injectFromFlags(values: Record<string, unknown>): InjectRule | undefined {
  const given = Object.keys(INJECT_OPTIONS).filter((k) => k !== 'inject' && values[k] !== undefined);
  if (!values.inject) {
    if (given.length) throw new UsageError(`--${given.join(', --')} describe an inject binding: add --inject`);
    return undefined;
  }
  for (const required of ['upstream', 'header', 'allow-route', 'budget']) {
    if (values[required] === undefined) throw new UsageError(`--inject needs --${required}`);
  }
  const maxBody = values['max-body'] === undefined ? DEFAULT_MAX_BODY : Number(values['max-body']);
  const allowStatus = values['allow-status'] === undefined ? undefined : String(values['allow-status']).split(',').map((s) => Number(s.trim()));
  try {
    return parseInject(
      {
        upstream: values.upstream,
        ...parseHeader(values.header as string),
        routes: values['allow-route'],
        maxBodyBytes: maxBody,
        budget: parseBudget(values.budget as string),
        ...(allowStatus ? { allowStatus } : {}),
      },
      'inject',
    );
  } catch (err) {
    if (err instanceof SchemaError) throw new UsageError(`--inject: ${err.message}`);
    throw err;
  }
}
