import { parseCommand } from '../args.js';
import { UsageError } from '../errors.js';
import { adminCall, mintToken, parseScopes } from '../admin-client.js';
import type { CliIo } from '../io.js';

export const ADMIN_USAGE = `Usage: keygate admin token --key K --scope S [--scope S2] [--ttl 60s] [--aud A]
       keygate admin audit-head --broker-admin URL (--token T | --key K) [--aud A]

Mints a short-lived admin token (a JWT, printed on stdout) for the broker's admin
API (/v1/admin on adminListen), signed with an admin API private key (Ed25519 or
P-256) whose public key the broker lists in adminApiKeys. Single use: one token
per request. Scopes: secrets:read, secrets:write, revocations:write,
baselines:approve, audit:read.

  --key K       admin API private key (JWK or PKCS#8 PEM)
  --scope S     a scope the token grants (repeatable, or space/comma separated)
  --ttl DUR     lifetime, at most 5m (default 60s)
  --aud A       the broker's adminAudience (default keygate-admin)

audit-head prints the broker's audit chain head (seq and hash of the last durable
record; scope audit:read): anchor it elsewhere to detect truncation later.
`;

/** `keygate admin token` */
export async function adminCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values, positionals } = parseCommand(argv, { key: { type: 'string' }, scope: { type: 'string', multiple: true }, ttl: { type: 'string' }, aud: { type: 'string' }, 'broker-admin': { type: 'string' }, token: { type: 'string' } }, 1);
  if (values.help) {
    io.out(ADMIN_USAGE);
    return 0;
  }
  if (positionals[0] === 'audit-head') {
    if (!values['broker-admin']) throw new UsageError('audit-head needs --broker-admin URL');
    io.out(`${JSON.stringify(await adminCall(values, 'audit:read', 'GET', '/v1/admin/audit/head'))}\n`);
    return 0;
  }
  if (positionals[0] !== 'token') throw new UsageError(`expected "keygate admin token" or "keygate admin audit-head"\n\n${ADMIN_USAGE}`);
  if (values['broker-admin'] || values.token) throw new UsageError('--broker-admin and --token are for audit-head');
  if (!values.key) throw new UsageError('--key K is required (the admin API private key)');
  io.out(`${await mintToken(values.key, parseScopes(values.scope ?? []), values.ttl, values.aud, now())}\n`);
  return 0;
}
