import type { KeyObject } from 'node:crypto';
import type { AuditChainReader } from '../../broker/audit/chain.js';
import type { AuditArchiveSettings } from '../../broker/audit/settings.js';
import type { BrokerConfig } from '../../broker/config.js';
import { loadPublicKeyFile } from '../../broker/signing-key.js';
import { readSigningPublicKey } from '../../broker/keys/open-key-source.js';
import { statePaths } from '../../broker/state.js';
import type { ArchiveVerification } from '../../broker/audit/archive/verify.js';
import { ArchiveError } from '../../broker/audit/archive/errors.js';
import { CodedError } from '../../lib/coded-error.js';
import { parseCommand } from '../args.js';
import { STORE_OPTIONS, brokerConfig } from '../context.js';
import { UsageError } from '../errors.js';
import type { CliIo } from '../io.js';

export const AUDIT_ARCHIVE_USAGE = `Usage: keygate audit export --config FILE [--key JWK|PEM | --no-signatures] [--json]
       keygate audit verify-archive --config FILE [--key JWK|PEM] [--from-seq N] [--json]

export: copies every audit chain's sealed records that are not archived yet
from the DynamoDB audit table to the S3 archive (audit.archive in the
config), as segments that each end on a seal, locked in compliance mode for
audit.archive.retentionDays from each segment's write: nobody, the account
root included, can delete or overwrite them until then. The archive is its
own record of progress: a chain's archived head is found by walking its
segments from the chain's genesis (hash links, seals), so running it again
(or after a crash, or twice at once) writes only what is new. Seal
signatures are checked under the broker key (--key, else the configured
shared keys) before anything is locked; without a key export refuses
(AUDIT_NO_KEY), unless --no-signatures is given: then only the hash chain is
checked, a table rewritten with recomputed hashes would be locked into the
archive, and the output says so. A chain is refused when its table records
do not continue its archived records (edited, deleted, bad seal) or the
table no longer holds the archived head (rolled back or rewritten after
export): ARCHIVE_CHAIN_BROKEN. The other chains are exported. What the
archive holds besides the segments that link (an object planted under a
segment-like key, an unlocked object, a delete marker, a second version, a
short retention) is printed as a WARNING and skipped; a segment key already
taken is left alone and the segment written under a key with a random tag.
A bucket without Object Lock is refused (ARCHIVE_NO_OBJECT_LOCK).

verify-archive: checks every archived chain from its start (hash chain, seal
signatures under --key, no missing segment) from the version listing, each
segment read by version id (a delete marker or a newer version is reported
and does not hide the locked original), every segment in compliance mode for
at least what export asked when it wrote it (at least 1 day for segments
written without that record), and that the table still holds exactly the
archived records up to the archived head (an edit, deletion or roll-back
after export is reported). An object that does not link is reported and
skipped: the genuine segments around it are still verified. A segment whose
retention has run out is counted and reported, not a problem. If such
segments at the start of the chains were deleted (pruned), --from-seq N
verifies each chain from its first present segment when that starts at or
before seq N (its first record's link to the pruned ones is taken as given,
and the output says so).

Exit status: 0 all exported (warnings printed) / archive intact, 1 a chain
refused / a problem found / no key / the archive unusable (its code is
printed; one JSON object with --json), 2 usage error.
`;

/** What the archive commands work on: the archive settings and, when the audit is on DynamoDB, its chains. */
export interface ArchiveContext {
  readonly settings: AuditArchiveSettings;
  /** The live audit table; undefined when this build cannot open it. */
  readonly reader?: AuditChainReader;
}

export type ArchiveContextSource = (config: BrokerConfig) => Promise<ArchiveContext>;

/** The one place the archive commands read the config: its audit archive and the DynamoDB audit table. */
export const archiveContext: ArchiveContextSource = async (config) => {
  const audit = config.audit;
  if (audit.kind !== 'dynamodb' || !audit.archive) {
    throw new UsageError('no audit archive configured: set audit.archive (bucket, retentionDays) with a DynamoDB audit in the config');
  }
  const { DynamoDbChainReader } = await import('../../broker/audit/dynamodb-chains.js');
  return { settings: audit.archive, reader: new DynamoDbChainReader(audit) };
};

/** The broker key seals are checked with: --key, else the configured shared keys (never created here). */
export async function sealKey(file: string | undefined, config: BrokerConfig): Promise<{ key: KeyObject; from: string } | undefined> {
  if (file) return { key: await publicKey(file), from: `--key ${file}` };
  return readSigningPublicKey(config.keys, statePaths(config));
}

async function publicKey(file: string): Promise<KeyObject> {
  try {
    return await loadPublicKeyFile(file);
  } catch (err) {
    throw new UsageError(`--key: cannot load ${file}: ${(err as Error).message}`);
  }
}

/** `keygate audit export` and `keygate audit verify-archive`; `context` is injectable for tests. */
export async function auditArchiveCommand(argv: readonly string[], io: CliIo, now: () => number = Date.now, context: ArchiveContextSource = archiveContext): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    { config: STORE_OPTIONS.config, key: { type: 'string' }, json: { type: 'boolean' }, 'no-signatures': { type: 'boolean' }, 'from-seq': { type: 'string' } },
    1,
  );
  if (values.help) {
    io.out(AUDIT_ARCHIVE_USAGE);
    return 0;
  }
  const sub = positionals[0];
  if (sub !== 'export' && sub !== 'verify-archive') throw new UsageError('expected: keygate audit export|verify-archive --config FILE');
  const noSignatures = values['no-signatures'] === true;
  if (noSignatures && sub !== 'export') throw new UsageError('--no-signatures is for audit export only: verify-archive always checks seals');
  if (noSignatures && values.key) throw new UsageError('--key and --no-signatures exclude each other');
  const fromSeq = values['from-seq'] === undefined ? undefined : Number(values['from-seq']);
  if (fromSeq !== undefined && (sub !== 'verify-archive' || !Number.isSafeInteger(fromSeq) || fromSeq < 1)) throw new UsageError('--from-seq N: a positive integer, for verify-archive only');
  const config = await brokerConfig({ ...(values.config ? { config: values.config } : {}) });
  const { settings, reader } = await context(config);
  try {
    const found = noSignatures ? undefined : await sealKey(values.key, config);
    // No key anywhere is the environment's problem, not the call's: a stable code, exit 1 (JSON with --json).
    if (sub === 'verify-archive' && !found) throw new ArchiveError('AUDIT_NO_KEY', 'verify-archive needs the broker public key: give --key (no signing key found in the configured shared keys)');
    if (sub === 'export' && !found && !noSignatures) {
      throw new ArchiveError(
        'AUDIT_NO_KEY',
        'audit export checks seal signatures before locking records: give --key (no signing key found in the configured shared keys), or --no-signatures to check only the hash chain (a table rewritten with recomputed hashes would then be locked into the archive)',
      );
    }
    return sub === 'export'
      ? await runExport(io, settings, reader, found?.key ?? 'unchecked', now, values.json === true)
      : await runVerify(io, settings, reader, found!.key, now, fromSeq, values.json === true);
  } catch (err) {
    // A refusal with a stable code (the archive's, or the audit table reader's): reported, exit 1.
    if (!(err instanceof CodedError) || err instanceof UsageError) throw err;
    if (values.json) io.out(`${JSON.stringify({ ok: false, error: { code: err.code, message: err.message } })}\n`);
    else io.err(`keygate audit ${sub}: ${err.code}: ${err.message}\n`);
    return 1;
  } finally {
    reader?.close();
  }
}

const UNCHECKED = 'WARNING: SEAL SIGNATURES NOT CHECKED (--no-signatures): only the hash chain was checked; records rewritten in the table with recomputed hashes would have been archived as genuine\n';

async function runExport(io: CliIo, settings: AuditArchiveSettings, reader: AuditChainReader | undefined, key: KeyObject | 'unchecked', now: () => number, json: boolean): Promise<number> {
  if (!reader) throw new UsageError('audit export needs the DynamoDB audit table (audit.kind "dynamodb" in the config)');
  const { exportAuditChains } = await import('../../broker/audit/archive/export.js');
  const report = await exportAuditChains(reader, settings, { now, publicKey: key });
  if (json) {
    io.out(`${JSON.stringify(report)}\n`);
    if (!report.sealsChecked) io.err(UNCHECKED);
    return report.ok ? 0 : 1;
  }
  if (!report.sealsChecked) io.out(UNCHECKED);
  for (const c of report.chains) {
    const written = c.segments.filter((s) => s.written);
    const bytes = written.reduce((n, s) => n + s.bytes, 0);
    const range = written.length ? ` (seq ${written[0]!.firstSeq}..${written[written.length - 1]!.lastSeq}, ${bytes} bytes)` : '';
    const pending = c.pending ? `, ${c.pending} unsealed record(s) left for the next run` : '';
    for (const w of c.warnings) io.out(`chain ${c.chainId}: WARNING ${w.kind.toUpperCase()}: ${w.message}\n`);
    if (c.error) io.out(`chain ${c.chainId}: REFUSED ${c.error.code}: ${c.error.message}\n`);
    else io.out(`chain ${c.chainId}: ${written.length} segment(s) written${range}, archived up to seq ${c.archivedSeq}${pending}\n`);
  }
  const warned = report.chains.reduce((n, c) => n + c.warnings.length, 0);
  io.out(`${report.chains.length} chain(s) to s3://${report.bucket}, each segment locked ${report.retentionDays} day(s) from its write${report.ok ? '' : '; SOME CHAINS REFUSED'}${warned ? `; ${warned} WARNING(S): run keygate audit verify-archive` : ''}${report.sealsChecked ? '' : '; SEAL SIGNATURES NOT CHECKED'}\n`);
  return report.ok ? 0 : 1;
}

async function runVerify(io: CliIo, settings: AuditArchiveSettings, reader: AuditChainReader | undefined, key: KeyObject, now: () => number, fromSeq: number | undefined, json: boolean): Promise<number> {
  const { verifyAuditArchive } = await import('../../broker/audit/archive/verify.js');
  const result = await verifyAuditArchive(settings, key, { now, ...(reader ? { reader } : {}), ...(fromSeq !== undefined ? { fromSeq } : {}) });
  if (json) {
    io.out(`${JSON.stringify(result)}\n`);
    return result.ok ? 0 : 1;
  }
  return printArchiveVerification(io, result, reader !== undefined);
}

/** Human output of an archive check (also under `keygate audit verify --config --archive`). */
export function printArchiveVerification(io: CliIo, result: ArchiveVerification, withTable: boolean): number {
  for (const c of result.chains) {
    const from = c.fromSeq > 1 ? ` from seq ${c.fromSeq} (records 1..${c.fromSeq - 1} not in the archive: pruned, allowed by --from-seq ${result.fromSeq ?? '?'})` : '';
    const expired = c.retentionExpired ? `; ${c.retentionExpired} segment(s) past their retention date (may be deleted now)` : '';
    io.out(`chain ${c.chainId}: ${c.segments} segment(s), verified${from} up to seq ${c.verifiedSeq}${expired}\n`);
  }
  for (const id of result.notArchived) io.out(`chain ${id}: in the table, nothing archived yet\n`);
  for (const p of result.problems) io.out(`${p.kind.toUpperCase()}: ${p.message}\n`);
  const expired = result.retentionExpired ? ` (retention expired on ${result.retentionExpired} segment(s))` : '';
  io.out(result.ok ? `archive s3://${result.bucket} intact${withTable ? ', table matches it' : ''}${expired}\n` : `archive s3://${result.bucket} NOT VERIFIED: ${result.problems.length} problem(s)\n`);
  return result.ok ? 0 : 1;
}
