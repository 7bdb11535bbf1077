import { readFile, access, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { verifyAuditLogs, type AuditFileText } from '../../broker/audit/verify-log.js';
import { auditFilesIn, listSegments } from '../../broker/audit/segments.js';
import { loadPublicKeyFile } from '../../broker/signing-key.js';
import { statePaths } from '../../broker/state.js';
import { UsageError } from '../errors.js';
import { parseCommand } from '../args.js';
import { STORE_OPTIONS, brokerConfig } from '../context.js';
import type { CliIo } from '../io.js';

export const AUDIT_USAGE = `Usage: keygate audit verify FILE|DIR... [--key JWK|PEM | --no-signatures] [--json] [--config FILE | --state DIR | --dev]
       keygate audit export|verify-archive --config FILE ... (the S3 archive: keygate audit export --help)

Checks the audit log's hash chain and seal signatures and reports the first
edited, dropped or reordered record. A rotated log is checked as one chain:
give its directory (segments audit.000001.jsonl, audit.000002.jsonl, ... by
number, then the live audit.jsonl), or the files in that order. The broker's
public key comes from --key, or from the broker state directory.

The log passes only when every record is covered by a seal whose signature
verified. Without a key it fails, unless --no-signatures is given (then only
the hash chain is checked, and the output says so).

Exit status: 0 intact and fully sealed, 1 tampered / torn tail / unsealed
records / empty / signatures not checked, 2 usage error.
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
    { ...STORE_OPTIONS, key: { type: 'string' }, json: { type: 'boolean' }, 'no-signatures': { type: 'boolean' } },
    Infinity,
  );
  if (values.help) {
    io.out(AUDIT_USAGE);
    return 0;
  }
  if (positionals[0] !== 'verify' || positionals.length < 2) throw new UsageError('expected: keygate audit verify FILE|DIR...');
  const noSignatures = values['no-signatures'] === true;
  if (noSignatures && values.key) throw new UsageError('--key and --no-signatures exclude each other');
  const files = await auditFiles(positionals.slice(1));
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
