import { readFile, access, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { verifyAuditLogs, type AuditFileText } from '../../broker/audit/verify-log.js';
import { auditFilesIn, auditLogsIn, listSegments } from '../../broker/audit/segments.js';
import { loadPublicKeyFile } from '../../broker/signing-key.js';
import { statePaths } from '../../broker/state.js';
import { readSigningPublicKey } from '../../broker/keys/open-key-source.js';
import { verifyAuditChains, type ChainsVerification } from '../../broker/audit/verify-chains.js';
import { UsageError } from '../errors.js';
import { CodedError } from '../../lib/coded-error.js';
import type { ArchiveVerification } from '../../broker/audit/archive/verify.js';
import { printArchiveVerification } from './audit-archive.js';
import { parseCommand } from '../args.js';
import { STORE_OPTIONS, brokerConfig, type StoreFlags } from '../context.js';
import type { CliIo } from '../io.js';

export const AUDIT_USAGE = `Usage: keygate audit verify FILE|DIR... [--key JWK|PEM | --no-signatures] [--json] [--config FILE | --state DIR | --dev]
       keygate audit verify --config FILE [--key JWK|PEM | --no-signatures] [--archive [--from-seq N]] [--json]
       keygate audit export|verify-archive --config FILE ... (the S3 archive: keygate audit export --help)

Checks the audit log's hash chain and seal signatures and reports the first
edited, dropped or reordered record. A rotated log is checked as one chain:
give its directory (segments audit.000001.jsonl, audit.000002.jsonl, ... by
number, then the live audit.jsonl), or the files in that order. The broker's
public key comes from --key, or from the broker state directory.

The log passes only when every record is covered by a seal whose signature
verified. Without a key it fails, unless --no-signatures is given (then only
the hash chain is checked, and the output says so).

With --config and no FILE, when the config's audit is on DynamoDB
("audit": {"kind": "dynamodb", ...}): checks every replica's chain in the
audit table: each chain's records from its own genesis (a chain copied
under another id fails), its seals, and that its head item agrees with its
last record (a head ahead of the records: acknowledged records deleted; records
beyond the head: written outside the broker). A replica that started but never
wrote (no records, head at its start) is reported empty, not failed, but a
table where no chain holds records is "nothing verified" (exit 1). Records
whose chain has no head item (the head deleted) fail it. Deleting a whole
chain (head and records), or a chain's last records with its head moved
back, leaves a consistent table: only --archive detects that. The key
comes from --key, else from the configured shared keys: the state
directory's key file, or (keys on DynamoDB) the signing-key item decrypted
with KMS; the output says which. Reading needs DynamoDB Query and Scan
(key-only, to find records without a head) on the audit
table (and, without --key, Query on the keys table and kms:Decrypt).
With --archive, the S3 archive (audit.archive) is checked too: every
archived chain from its genesis, its segments still locked, and the table
still holding exactly what was archived (keygate audit verify-archive);
--from-seq N accepts an archive whose segments before N were pruned.

Exit status: 0 intact and fully sealed (every chain), 1 tampered / torn tail /
unsealed records / empty / signatures not checked / table or key unreadable,
2 usage error.
`;

async function readAuditFile(file: string): Promise<AuditFileText> {
  try {
    return { name: file, text: await readFile(file, 'utf8') };
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/** The files to check, in chain order: a directory expands to its segments then the live file. */
async function auditFiles(args: readonly string[]): Promise<string[]> {
  const files: string[] = [];
  for (const arg of args) {
    const isDir = await stat(arg).then((s) => s.isDirectory(), () => false);
    if (!isDir) {
      files.push(arg);
      continue;
    }
    let found: string[];
    try {
      found = await auditFilesIn(arg);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    if (!found.length) throw new UsageError(`${arg} holds no audit files (*.jsonl)`);
    files.push(...found);
  }
  return files;
}

/** `keygate audit verify` */
export async function auditCommand(argv: readonly string[], io: CliIo, now: () => number = Date.now): Promise<number> {
  // The S3 archive (export, verify-archive) lives in its own module, loaded only when asked for.
  if (argv[0] === 'export' || argv[0] === 'verify-archive') return (await import('./audit-archive.js')).auditArchiveCommand(argv, io, now);
  const { values, positionals } = parseCommand(
    argv,
    { ...STORE_OPTIONS, key: { type: 'string' }, json: { type: 'boolean' }, 'no-signatures': { type: 'boolean' }, archive: { type: 'boolean' }, 'from-seq': { type: 'string' } },
    Infinity,
  );
  if (values.help) {
    io.out(AUDIT_USAGE);
    return 0;
  }
  const noSignatures = values['no-signatures'] === true;
  if (positionals[0] === 'verify' && positionals.length === 1 && (values.config !== undefined || process.env.KEYGATE_CONFIG !== undefined)) {
    if (noSignatures && values.key) throw new UsageError('--key and --no-signatures exclude each other');
    if (values.archive && noSignatures) throw new UsageError('--archive needs the broker key: it does not combine with --no-signatures');
    if (values['from-seq'] !== undefined && !values.archive) throw new UsageError('--from-seq N applies to the archive: use it with --archive');
    return verifyChains(values, noSignatures, io, now);
  }
  if (values.archive) throw new UsageError('--archive checks the S3 archive of a DynamoDB audit: use it with --config FILE and no FILE arguments');
  if (positionals[0] !== 'verify' || positionals.length < 2) throw new UsageError('expected: keygate audit verify FILE|DIR... (or --config FILE for the chains in DynamoDB)');
  if (noSignatures && values.key) throw new UsageError('--key and --no-signatures exclude each other');
  // One directory holding several logs (the per-worker chains of `keygate broker --workers N`): each is checked on its own.
  const several = await severalLogs(positionals.slice(1));
  const files = several ? [] : await auditFiles(positionals.slice(1));
  const texts = await Promise.all(files.map(readAuditFile));
  let key: KeyObject | undefined;
  if (!noSignatures) {
    let keyFile = values.key;
    if (!keyFile) {
      const candidate = statePaths(await brokerConfig(values)).signingKey;
      if (await access(candidate).then(() => true, () => false)) keyFile = candidate;
    }
    if (keyFile) {
      try {
        key = await loadPublicKeyFile(keyFile);
      } catch (err) {
        throw new UsageError(`--key: cannot load ${keyFile}: ${(err as Error).message}`);
      }
    }
  }
  if (several) return verifySeveral(several, key, noSignatures, values.json === true, io);
  const result = verifyAuditLogs(texts, key, { allowUnsigned: noSignatures });
  if (values.json) {
    io.out(`${JSON.stringify({ ...result, sealsVerified: Boolean(key) })}\n`);
    return result.ok ? 0 : 1;
  }
  const where = (file?: string): string => (file && files.length > 1 ? ` of ${file}` : '');
  const counts = `${result.decisions} decisions, ${result.summaries} refusal summaries, ${result.seals} seals`;
  const p = result.problem;
  if (!p) {
    io.out(
      `audit log intact: ${result.decisions} decisions, ${result.seals} seals (${key ? 'signatures verified' : 'SIGNATURES NOT CHECKED (--no-signatures): only the hash chain was checked'}), ` +
        `${result.summaries} refusal summaries, in ${files.length} file(s), last sealed record ${result.lastSealedSeq}\nhead ${result.headHash}\n`,
    );
    return 0;
  }
  if (p.kind === 'tampered') {
    io.out(`audit log TAMPERED at line ${p.line}${where(p.file)}: ${p.message}\n`);
    if (files.length === 1 && p.line === 1 && /dropped/.test(p.message)) {
      const segments = await listSegments(files[0]!).catch(() => []);
      if (segments.length) io.out(`(earlier rotated files exist beside it, e.g. ${basename(segments[0]!.path)}: give the directory to check the whole chain)\n`);
    }
  } else if (p.kind === 'torn-tail') {
    io.out(`audit log has a TORN TAIL at line ${p.line}${where(p.file)}: ${p.message}\n${counts} before it\n`);
  } else if (p.kind === 'unsealed') {
    io.out(`audit log NOT FULLY SEALED: ${result.unsealed} unsealed record(s): ${p.message}\n`);
  } else if (p.kind === 'empty') {
    io.out(`audit log NOT VERIFIED: ${p.message}\n`);
  } else {
    io.out(`audit log NOT VERIFIED: ${p.message}; chain of ${counts} intact\n`);
  }
  return 1;
}

/** The logs of `args` when it is one directory holding more than one audit log; otherwise undefined (the files form one chain). */
async function severalLogs(args: readonly string[]): Promise<Array<{ log: string; files: string[] }> | undefined> {
  if (args.length !== 1 || !(await stat(args[0]!).then((s) => s.isDirectory(), () => false))) return undefined;
  const logs = await auditLogsIn(args[0]!).catch(() => []);
  return logs.length > 1 ? logs : undefined;
}

/** Checks each log of a directory as its own chain; intact only if every one is (exit 0), else 1. */
async function verifySeveral(logs: ReadonlyArray<{ log: string; files: string[] }>, key: KeyObject | undefined, noSignatures: boolean, json: boolean, io: CliIo): Promise<number> {
  const results = [];
  for (const { log, files } of logs) results.push({ log, ...verifyAuditLogs(await Promise.all(files.map(readAuditFile)), key, { allowUnsigned: noSignatures }) });
  const ok = results.every((r) => r.ok);
  if (json) {
    io.out(`${JSON.stringify({ ok, sealsVerified: Boolean(key), logs: results })}\n`);
    return ok ? 0 : 1;
  }
  for (const r of results) {
    io.out(
      r.ok
        ? `${r.log}: intact: ${r.decisions} decisions, ${r.seals} seals, ${r.summaries} refusal summaries, in ${r.files} file(s), last sealed record ${r.lastSealedSeq}, head ${r.headHash}\n`
        : `${r.log}: ${r.problem?.kind === 'tampered' ? 'TAMPERED' : 'NOT VERIFIED'}${r.problem ? ` at line ${r.problem.line}${r.problem.file ? ` of ${r.problem.file}` : ''}: ${r.problem.message}` : ''}\n`,
    );
  }
  io.out(ok ? `audit logs intact: ${results.length} chains (${key ? 'signatures verified' : 'SIGNATURES NOT CHECKED (--no-signatures): only the hash chains were checked'})\n` : `audit logs NOT all intact: ${results.filter((r) => !r.ok).length} of ${results.length} chains\n`);
  return ok ? 0 : 1;
}

/** `keygate audit verify --config FILE`: every replica's chain in the configured DynamoDB audit table. */
async function verifyChains(values: StoreFlags & { key?: string; json?: boolean; archive?: boolean; 'from-seq'?: string }, noSignatures: boolean, io: CliIo, now: () => number): Promise<number> {
  const fromSeq = values['from-seq'] === undefined ? undefined : Number(values['from-seq']);
  if (fromSeq !== undefined && (!Number.isSafeInteger(fromSeq) || fromSeq < 1)) throw new UsageError('--from-seq N: a positive integer');
  const config = await brokerConfig(values);
  if (config.audit.kind !== 'dynamodb') {
    throw new UsageError('the configured audit is the file log: give its file or directory (keygate audit verify FILE|DIR...); --config alone verifies the chains of a DynamoDB audit table');
  }
  const table = config.audit.table;
  let key: KeyObject | undefined;
  let keyFrom: string;
  if (noSignatures) {
    keyFrom = 'none: --no-signatures (only the hash chains are checked)';
  } else if (values.key) {
    try {
      key = await loadPublicKeyFile(values.key);
    } catch (err) {
      throw new UsageError(`--key: cannot load ${values.key}: ${(err as Error).message}`);
    }
    keyFrom = `--key ${values.key}`;
  } else {
    let found;
    try {
      found = await readSigningPublicKey(config.keys, statePaths(config));
    } catch (err) {
      io.out(`audit chains NOT VERIFIED: cannot load the broker signing key: ${(err as Error).message}\n`);
      return 1;
    }
    key = found?.key;
    keyFrom = found ? found.from : `none found (${config.keys.kind === 'file' ? `no key file ${statePaths(config).signingKey}` : `no signing key in table ${config.keys.table}`}): give --key`;
  }
  if (values.archive && (config.audit.kind !== 'dynamodb' || !config.audit.archive)) throw new UsageError('--archive: no audit archive configured (audit.archive with bucket and retentionDays)');
  if (values.archive && !key) {
    // No key anywhere is the environment, not a usage mistake: a coded refusal, as audit export gives it.
    const message = `--archive needs the broker key to check the archived seals: ${keyFrom}`;
    io.out(values.json ? `${JSON.stringify({ ok: false, error: { code: 'AUDIT_NO_KEY', message } })}\n` : `audit chains NOT VERIFIED: AUDIT_NO_KEY: ${message}\n`);
    return 1;
  }
  const { DynamoDbChainReader } = await import('../../broker/audit/dynamodb-chains.js');
  const reader = new DynamoDbChainReader(config.audit);
  let result: ChainsVerification;
  let archive: ArchiveVerification | undefined;
  try {
    result = await verifyAuditChains(reader, key, { allowUnsigned: noSignatures });
    if (values.archive && config.audit.archive) {
      const { verifyAuditArchive } = await import('../../broker/audit/archive/verify.js');
      archive = await verifyAuditArchive(config.audit.archive, key!, { now, reader, ...(fromSeq !== undefined ? { fromSeq } : {}) });
    }
  } catch (err) {
    const code = err instanceof CodedError ? `${err.code}: ` : '';
    const message = `cannot read the audit table ${table}${values.archive ? ' or its archive' : ''}: ${code}${(err as Error).message}`;
    io.out(values.json ? `${JSON.stringify({ ok: false, table, key: { from: keyFrom, sealsVerified: Boolean(key) }, error: message })}\n` : `audit chains NOT VERIFIED: ${message}\n`);
    return 1;
  } finally {
    reader.close();
  }
  const ok = result.ok && (archive?.ok ?? true);
  if (values.json) {
    io.out(`${JSON.stringify({ ok, table, key: { from: keyFrom, sealsVerified: Boolean(key) }, chains: result.chains, orphans: result.orphans, verifiedChains: result.verifiedChains, ...(archive ? { archive } : {}) })}\n`);
    return ok ? 0 : 1;
  }
  printChains(io, result, table, keyFrom, key !== undefined);
  if (archive) printArchiveVerification(io, archive, true);
  // What a table admin can erase without a trace in the table itself: say it, so "intact" is not read as more.
  io.out(
    archive
      ? 'coverage: the table checked against the archive: deleting whole chains, or a chain\'s most recent records (its head moved back), is detected for everything exported (records written since the last export are covered by the table alone)\n'
      : 'coverage: the table alone: deleting whole chains, or a chain\'s most recent records (its head moved back), is detected only against the archive (--archive)\n',
  );
  return ok ? 0 : 1;
}

function printChains(io: CliIo, result: ChainsVerification, table: string, keyFrom: string, signed: boolean): void {
  io.out(`audit chains in DynamoDB table ${table}; broker key: ${keyFrom}\n`);
  for (const c of result.chains) {
    const r = c.records;
    const p = r.problem;
    if (c.empty) io.out(`chain ${c.id}: empty (${c.started ? `started ${c.started}, ` : ''}no records)\n`);
    else if (c.ok) io.out(`chain ${c.id}: intact: ${r.decisions} decisions, ${r.summaries} refusal summaries, ${r.seals} seals (${signed ? 'signatures verified' : 'SIGNATURES NOT CHECKED'}), head seq ${c.head.seq}\n`);
    else {
      if (p) io.out(`chain ${c.id}: ${p.kind === 'tampered' ? 'TAMPERED' : 'NOT VERIFIED'}${p.seq !== undefined ? ` at seq ${p.seq}` : ''}: ${p.message}\n`);
      if (c.headProblem) io.out(`chain ${c.id}: HEAD ${c.headProblem.kind === 'head-ahead' ? 'AHEAD OF THE RECORDS' : c.headProblem.kind === 'records-beyond-head' ? 'BEHIND THE RECORDS' : 'DOES NOT MATCH'}: ${c.headProblem.message}\n`);
    }
  }
  for (const id of result.orphans) io.out(`chain ${id}: RECORDS WITHOUT A HEAD: the chain's head item was deleted (the chain erased in part or whole)\n`);
  const failed = result.chains.filter((c) => !c.ok).length;
  const orphans = result.orphans.length ? `${result.orphans.length} chain(s) with records but no head` : '';
  if (!result.chains.length && !orphans) io.out(`audit chains NOT VERIFIED: table ${table} holds no chains: there is nothing to verify\n`);
  else if (failed || orphans) io.out(`audit chains NOT VERIFIED: ${[failed ? `${failed} of ${result.chains.length} chain(s) failed` : '', orphans].filter(Boolean).join('; ')}\n`);
  else if (!result.verifiedChains) io.out(`audit chains NOT VERIFIED: no chain in table ${table} holds records: nothing verified\n`);
  else io.out(`audit chains intact: ${result.chains.length} chain(s)${result.verifiedChains < result.chains.length ? ` (${result.chains.length - result.verifiedChains} empty)` : ''}\n`);
}
