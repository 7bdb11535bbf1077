import { readFile, access } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { loadPublicKeyFile } from '../../broker/signing-key.js';
import { statePaths } from '../../broker/broker.js';
import { UsageError } from '../errors.js';
import { parseCommand } from '../args.js';
import { STORE_OPTIONS, brokerConfig } from '../context.js';
import type { CliIo } from '../io.js';

export const AUDIT_USAGE = `Usage: keygate audit verify FILE [--key JWK|PEM] [--json] [--config FILE | --state DIR | --dev]

Checks the audit log's hash chain and seal signatures and reports the first
edited, dropped or reordered record. The broker's public key comes from --key,
or from the broker state directory.

Exit status: 0 intact, 1 tampered, 2 usage error.
`;

/** `keygate audit verify` */
export async function auditCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(argv, { ...STORE_OPTIONS, key: { type: 'string' }, json: { type: 'boolean' } }, 2);
  if (values.help) {
    io.out(AUDIT_USAGE);
    return 0;
  }
  if (positionals[0] !== 'verify' || positionals.length !== 2) throw new UsageError('expected: keygate audit verify FILE');
  const file = positionals[1]!;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let keyFile = values.key;
  if (!keyFile) {
    const candidate = statePaths(await brokerConfig(values)).signingKey;
    if (await access(candidate).then(() => true, () => false)) keyFile = candidate;
  }
  let key: KeyObject | undefined;
  if (keyFile) {
    try {
      key = await loadPublicKeyFile(keyFile);
    } catch (err) {
      throw new UsageError(`--key: cannot load ${keyFile}: ${(err as Error).message}`);
    }
  }
  const result = verifyAuditLog(text, key);
  if (values.json) {
    io.out(`${JSON.stringify({ ...result, sealsVerified: Boolean(key) })}\n`);
  } else if (result.ok) {
    io.out(
      `audit log intact: ${result.decisions} decisions, ${result.seals} seals (${key ? 'signatures verified' : 'SIGNATURES NOT CHECKED: no broker key'}), ` +
        `last sealed record ${result.lastSealedSeq}, ${result.unsealed} unsealed after it\nhead ${result.headHash}\n`,
    );
  } else {
    io.out(`audit log TAMPERED at line ${result.problem!.line}: ${result.problem!.message}\n`);
  }
  return result.ok ? 0 : 1;
}
