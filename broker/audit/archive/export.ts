import type { KeyObject } from 'node:crypto';
import { CHAIN_ID, chainGenesis, lineHash, type AuditChainReader, type ChainHead, type ChainSummary } from '../chain.js';
import type { AuditArchiveSettings } from '../settings.js';
import { verifyAuditLogs } from '../verify-log.js';
import { ArchiveError, type ArchiveErrorCode } from './errors.js';
import { chainPrefix, segmentKey } from './keys.js';
import { readListing } from './listing.js';
import type { ArchiveObjectStore } from './object-store.js';
import { openArchiveStore, requireObjectLock } from './open-archive.js';
import { lockState } from './retention.js';
import { segmentLines, type SegmentLimits } from './segmenter.js';

/**
 * `keygate audit export`: copies each chain's sealed lines that are not yet
 * archived to S3 as compliance-locked segments. The archive is its own
 * record of progress (no state elsewhere): a chain's last archived line is
 * the end of its highest compliance-locked segment (read by version id from
 * the version listing, so a delete marker cannot hide it), the table must
 * still hold that record byte for byte, and the table's lines are exported
 * only if they continue it (hash link, seqs, seal signatures), so tampering
 * in the table is refused rather than laundered into the archive.
 */

export interface ExportOptions {
  /** Clock for the retention date. Default Date.now. */
  readonly now?: () => number;
  /**
   * The broker key seals are checked under before anything is locked. 'unchecked' (the CLI's explicit
   * --no-signatures) checks only the hash chain: a table rewritten with recomputed hashes would then be
   * locked into the archive.
   */
  readonly publicKey: KeyObject | 'unchecked';
  readonly limits?: SegmentLimits;
  /** The object store (tests); default S3 from the settings. */
  readonly store?: ArchiveObjectStore;
}

export interface ExportedSegment {
  readonly key: string;
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly bytes: number;
  /** False: an identical segment was already there (a concurrent or interrupted export wrote it). */
  readonly written: boolean;
}

export interface ChainExport {
  readonly chainId: string;
  readonly segments: ExportedSegment[];
  /** The chain's last archived seq after this run (0: nothing archived). */
  readonly archivedSeq: number;
  /** Lines read after the last seal, left for the next run. */
  readonly pending: number;
  readonly error?: { readonly code: ArchiveErrorCode; readonly message: string };
}

export interface ArchiveExport {
  /** True when every chain exported (or had nothing new). */
  readonly ok: boolean;
  readonly bucket: string;
  readonly retainUntil: string;
  /** False when seal signatures were not checked (--no-signatures). */
  readonly sealsChecked: boolean;
  readonly chains: ChainExport[];
}

const DAY_MS = 86_400_000;

/**
 * Where the archive of a chain ends: its last line's position, hash and bytes (genesis when nothing is archived).
 * Refuses (ARCHIVE_TAMPERED) a chain whose archive holds what export never writes.
 */
async function archivedHead(store: ArchiveObjectStore, settings: AuditArchiveSettings, chainId: string, now: number): Promise<ChainHead & { line?: string }> {
  const prefix = settings.prefix ?? '';
  const listing = readListing(prefix, await store.listVersions(chainPrefix(prefix, chainId)));
  const hidden = listing.problems.find((p) => p.kind !== 'foreign-object');
  if (hidden) throw new ArchiveError('ARCHIVE_TAMPERED', `${hidden.message}; nothing is exported for chain ${chainId} until that is resolved (run keygate audit verify-archive)`);
  // The highest end, not the last name: concurrent exporters may have written overlapping segments.
  const candidates = listing.segments.filter((s) => s.chainId === chainId).sort((a, b) => b.lastSeq - a.lastSeq);
  const last = candidates[0];
  if (!last) return { seq: 0, prevHash: chainGenesis(chainId) };
  const object = await store.get(last.key, last.versionId);
  // Only a compliance-locked segment counts as archived: anyone with s3:PutObject can write an object whose
  // name claims any range.
  const lock = lockState(object, last.lastModified, settings.retentionDays, now);
  if (lock.state === 'not-locked' || lock.state === 'short-retention') {
    throw new ArchiveError('ARCHIVE_TAMPERED', `${last.key} is not a segment export wrote (${lock.why}); nothing is exported for chain ${chainId} until it is removed (run keygate audit verify-archive)`);
  }
  const lines = object.body.toString('utf8').split('\n');
  const lastLine = lines[lines.length - 1] === '' ? lines[lines.length - 2] : undefined;
  if (lastLine === undefined || seqOf(lastLine) !== last.lastSeq) {
    throw new ArchiveError('ARCHIVE_CHAIN_BROKEN', `archived segment ${last.key} does not end with record ${last.lastSeq} as its name says: run keygate audit verify-archive`);
  }
  return { seq: last.lastSeq, prevHash: lineHash(lastLine), line: lastLine };
}

function seqOf(line: string): unknown {
  try {
    return (JSON.parse(line) as { seq?: unknown }).seq;
  } catch {
    return undefined;
  }
}

/**
 * The table's lines after the archived head, once the table is seen to still hold that head byte for byte: a
 * table rolled back or rewritten after export would otherwise just look like "nothing new".
 */
async function* afterArchivedHead(reader: AuditChainReader, chainId: string, tableHead: number, head: ChainHead & { line?: string }): AsyncGenerator<string> {
  if (head.line === undefined) {
    yield* reader.readLines(chainId, 0);
    return;
  }
  const broken = (what: string): ArchiveError =>
    new ArchiveError('ARCHIVE_CHAIN_BROKEN', `chain ${chainId} is archived up to seq ${head.seq} but ${what}: rolled back or rewritten after export; nothing is exported (run keygate audit verify-archive)`);
  if (tableHead < head.seq) throw broken(`the table's head is at seq ${tableHead}`);
  let first = true;
  for await (const line of reader.readLines(chainId, head.seq - 1)) {
    if (first) {
      if (line !== head.line) throw broken(seqOf(line) === head.seq ? `the table's record ${head.seq} differs from the archived one` : `the table has no record ${head.seq}`);
      first = false;
      continue;
    }
    yield line;
  }
  if (first) throw broken(`the table has no record ${head.seq}`);
}

async function exportChain(
  reader: AuditChainReader,
  store: ArchiveObjectStore,
  settings: AuditArchiveSettings,
  chain: ChainSummary,
  retainUntil: Date,
  now: number,
  options: ExportOptions,
  progress: Progress,
): Promise<void> {
  const prefix = settings.prefix ?? '';
  const chainId = chain.id;
  const archived = await archivedHead(store, settings, chainId, now);
  let head: ChainHead = { seq: archived.seq, prevHash: archived.prevHash };
  progress.archivedSeq = head.seq;
  const publicKey = options.publicKey === 'unchecked' ? undefined : options.publicKey;
  for await (const segment of segmentLines(afterArchivedHead(reader, chainId, chain.head.seq, archived), options.limits, progress)) {
    const text = `${segment.lines.join('\n')}\n`;
    const check = verifyAuditLogs([{ name: `table chain ${chainId}`, text }], publicKey, { genesis: chainGenesis(chainId), from: head, allowUnsigned: !publicKey });
    if (!check.ok) {
      const at = check.problem?.seq !== undefined ? ` at seq ${check.problem.seq}` : '';
      throw new ArchiveError(
        'ARCHIVE_CHAIN_BROKEN',
        `the table's records do not continue the archived chain${at} (archived up to seq ${head.seq}): ${check.problem?.message ?? 'not verified'}; nothing after seq ${head.seq} is exported`,
      );
    }
    const key = segmentKey(prefix, chainId, segment.firstSeq, segment.lastSeq);
    const body = Buffer.from(text, 'utf8');
    const outcome = await store.putLocked(key, body, retainUntil);
    if (outcome === 'exists') {
      // Another exporter's segment counts only as export writes it: the same bytes, compliance-locked long enough.
      const there = await store.get(key);
      if (!there.body.equals(body)) throw new ArchiveError('ARCHIVE_CONFLICT', `${key} already holds different bytes: not overwritten (run keygate audit verify-archive)`);
      const lock = lockState(there, undefined, settings.retentionDays, now);
      if (lock.state !== 'locked') throw new ArchiveError('ARCHIVE_TAMPERED', `${key} already holds these records but is not protected as export protects it (${'why' in lock ? lock.why : 'retention expired'}): run keygate audit verify-archive`);
    }
    progress.segments.push({ key, firstSeq: segment.firstSeq, lastSeq: segment.lastSeq, bytes: body.length, written: outcome === 'written' });
    head = { seq: segment.lastSeq, prevHash: check.headHash };
    progress.archivedSeq = head.seq;
  }
}

interface Progress {
  segments: ExportedSegment[];
  archivedSeq: number;
  pending: number;
}

/** Exports every chain of `reader`; a chain that fails is reported and the others still run. */
export async function exportAuditChains(reader: AuditChainReader, settings: AuditArchiveSettings, options: ExportOptions): Promise<ArchiveExport> {
  const store = options.store ?? (await openArchiveStore(settings));
  try {
    await requireObjectLock(store);
    const now = (options.now ?? Date.now)();
    const retainUntil = new Date(now + settings.retentionDays * DAY_MS);
    const chains: ChainExport[] = [];
    for (const chain of await reader.listChains()) {
      const id = chain.id;
      const progress: Progress = { segments: [], archivedSeq: 0, pending: 0 };
      try {
        if (!CHAIN_ID.test(id)) throw new ArchiveError('ARCHIVE_BAD_CHAIN_ID', `chain id ${JSON.stringify(id)} is not a valid chain id`);
        await exportChain(reader, store, settings, chain, retainUntil, now, options, progress);
        chains.push({ chainId: id, ...progress });
      } catch (err) {
        // One chain's refusal (tampering, a conflict, S3 failing on it) does not stop the others.
        if (!(err instanceof ArchiveError)) throw err;
        chains.push({ chainId: id, ...progress, error: { code: err.code, message: err.message } });
      }
    }
    return { ok: chains.every((c) => !c.error), bucket: store.bucket, retainUntil: retainUntil.toISOString(), sealsChecked: options.publicKey !== 'unchecked', chains };
  } finally {
    if (!options.store) store.close();
  }
}
