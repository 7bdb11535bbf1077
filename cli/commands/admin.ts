import { parseCommand } from '../args.js';
import { UsageError } from '../errors.js';
import { mintToken, parseScopes } from '../admin-client.js';
import type { CliIo } from '../io.js';

export const ADMIN_USAGE = `Usage: keygate admin token --key K --scope S [--scope S2] [--ttl 60s] [--aud A]

Mints a short-lived admin token (a JWT, printed on stdout) for the broker's admin
API (/v1/admin on adminListen), signed with an admin API private key (Ed25519 or
P-256) whose public key the broker lists in adminApiKeys. Single use: one token
per request. Scopes: secrets:read, secrets:write, revocations:write,
baselines:approve, audit:read.

  --key K       admin API private key (JWK or PKCS#8 PEM)
  --scope S     a scope the token grants (repeatable, or space/comma separated)
  --ttl DUR     lifetime, at most 5m (default 60s)
  --aud A       the broker's adminAudience (default keygate-admin)
`;

/** `keygate admin token` */
export async function adminCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values, positionals } = parseCommand(argv, { key: { type: 'string' }, scope: { type: 'string', multiple: true }, ttl: { type: 'string' }, aud: { type: 'string' } }, 1);
  if (values.help) {
    io.out(ADMIN_USAGE);
    return 0;
  }
  if (positionals[0] !== 'token') throw new UsageError(`expected "keygate admin token"\n\n${ADMIN_USAGE}`);
  if (!values.key) throw new UsageError('--key K is required (the admin API private key)');
  io.out(`${await mintToken(values.key, parseScopes(values.scope ?? []), values.ttl, values.aud, now())}\n`);
  return 0;
}
