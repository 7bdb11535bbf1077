import type { KeyObject } from 'node:crypto';
import { CHAIN_ID, chainGenesis, lineHash, type AuditChainReader, type ChainHead } from '../chain.js';
import type { AuditArchiveSettings } from '../settings.js';
import { verifyAuditLogs } from '../verify-log.js';
import { ArchiveError, type ArchiveErrorCode } from './errors.js';
import { chainPrefix, parseSegmentKey, segmentKey, type SegmentKey } from './keys.js';
import type { ArchiveObjectStore } from './object-store.js';
import { openArchiveStore, requireObjectLock } from './open-archive.js';
import { segmentLines, type SegmentLimits } from './segmenter.js';

/**
 * `keygate audit export`: copies each chain's sealed lines that are not yet
 * archived to S3 as compliance-locked segments. The archive is its own
 * record of progress (no state elsewhere): a chain's last archived line is
 * the end of its highest segment, and the table's lines are exported only if
 * they continue it (hash link, seqs, seals), so tampering in the table is
 * refused rather than laundered into the archive.
 */

export interface ExportOptions {
  /** Clock for the retention date. Default Date.now. */
  readonly now?: () => number;
  /** When given, seal signatures are checked too, not only the hash chain. */
  readonly publicKey?: KeyObject;
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
  readonly chains: ChainExport[];
}

const DAY_MS = 86_400_000;

/** Where the archive of a chain ends: its last line's position and hash (genesis when nothing is archived). */
async function archivedHead(store: ArchiveObjectStore, prefix: string, chainId: string): Promise<ChainHead> {
  let last: SegmentKey | undefined;
  // The highest end, not the last name: concurrent exporters may have written overlapping segments.
  for (const key of await store.list(chainPrefix(prefix, chainId))) {
    const segment = parseSegmentKey(prefix, key);
    if (segment?.chainId === chainId && (!last || segment.lastSeq > last.lastSeq)) last = segment;
  }
  if (!last) return { seq: 0, prevHash: chainGenesis(chainId) };
  const lines = (await store.get(last.key)).body.toString('utf8').split('\n');
  const lastLine = lines[lines.length - 1] === '' ? lines[lines.length - 2] : undefined;
  let seq: unknown;
  try {
    seq = lastLine === undefined ? undefined : (JSON.parse(lastLine) as { seq?: unknown }).seq;
  } catch {
    seq = undefined;
  }
  if (seq !== last.lastSeq) {
    throw new ArchiveError('ARCHIVE_CHAIN_BROKEN', `archived segment ${last.key} does not end with record ${last.lastSeq} as its name says: run keygate audit verify-archive`);
  }
  return { seq: last.lastSeq, prevHash: lineHash(lastLine!) };
}

async function exportChain(
  reader: AuditChainReader,
  store: ArchiveObjectStore,
  settings: AuditArchiveSettings,
  chainId: string,
  retainUntil: Date,
  options: ExportOptions,
  progress: Progress,
): Promise<void> {
  const prefix = settings.prefix ?? '';
  let head = await archivedHead(store, prefix, chainId);
  progress.archivedSeq = head.seq;
  for await (const segment of segmentLines(reader.readLines(chainId, head.seq), options.limits, progress)) {
    const text = `${segment.lines.join('\n')}\n`;
    const check = verifyAuditLogs([{ name: `table chain ${chainId}`, text }], options.publicKey, { genesis: chainGenesis(chainId), from: head, allowUnsigned: !options.publicKey });
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
    if (outcome === 'exists' && !(await store.get(key)).body.equals(body)) {
      throw new ArchiveError('ARCHIVE_CONFLICT', `${key} already holds different bytes: not overwritten (run keygate audit verify-archive)`);
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
export async function exportAuditChains(reader: AuditChainReader, settings: AuditArchiveSettings, options: ExportOptions = {}): Promise<ArchiveExport> {
  const store = options.store ?? (await openArchiveStore(settings));
  try {
    await requireObjectLock(store);
    const retainUntil = new Date((options.now ?? Date.now)() + settings.retentionDays * DAY_MS);
    const chains: ChainExport[] = [];
    for (const { id } of await reader.listChains()) {
      const progress: Progress = { segments: [], archivedSeq: 0, pending: 0 };
      try {
        if (!CHAIN_ID.test(id)) throw new ArchiveError('ARCHIVE_BAD_CHAIN_ID', `chain id ${JSON.stringify(id)} is not a valid chain id`);
        await exportChain(reader, store, settings, id, retainUntil, options, progress);
        chains.push({ chainId: id, ...progress });
      } catch (err) {
        // One chain's refusal (tampering, a conflict, S3 failing on it) does not stop the others.
        if (!(err instanceof ArchiveError)) throw err;
        chains.push({ chainId: id, ...progress, error: { code: err.code, message: err.message } });
      }
    }
    return { ok: chains.every((c) => !c.error), bucket: store.bucket, retainUntil: retainUntil.toISOString(), chains };
  } finally {
    if (!options.store) store.close();
  }
}
