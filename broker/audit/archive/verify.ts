import type { KeyObject } from 'node:crypto';
import { chainGenesis, type AuditChainReader, type ChainHead } from '../chain.js';
import type { AuditArchiveSettings } from '../settings.js';
import { verifyAuditLogs } from '../verify-log.js';
import { bySeq, parseSegmentKey, type SegmentKey } from './keys.js';
import type { ArchiveObjectStore } from './object-store.js';
import { openArchiveStore } from './open-archive.js';

/**
 * Checks the S3 archive: each chain's segments, in seq order, as one chain
 * from the chain's genesis (hash links, seqs, seal signatures), with no gap
 * between segments; every segment still under compliance-mode retention;
 * and, given the live table, that the table still holds exactly the records
 * the archive has (an edit or deletion after export shows up here).
 */

/**
 * - gap: a segment is missing (seqs not contiguous between keys)
 * - tampered: a segment's content does not continue the chain (edit, bad seal, content not matching its key)
 * - not-locked: an object without compliance retention, or whose retention has run out
 * - foreign-object: an object under the prefix that export does not write
 * - table-edited / table-missing: the table's record at an archived seq differs from the archive, or is gone
 * - chain-deleted: a chain in the archive has no chain in the table
 * - empty: nothing archived
 */
export type ArchiveProblemKind = 'gap' | 'tampered' | 'not-locked' | 'foreign-object' | 'table-edited' | 'table-missing' | 'chain-deleted' | 'empty';

export interface ArchiveProblem {
  readonly kind: ArchiveProblemKind;
  readonly chainId?: string;
  readonly key?: string;
  readonly seq?: number;
  readonly message: string;
}

export interface ArchivedChain {
  readonly chainId: string;
  readonly segments: number;
  /** Last seq verified from the chain's start (it stops at the first gap or tampering). */
  readonly verifiedSeq: number;
  readonly headHash: string;
}

export interface ArchiveVerification {
  readonly ok: boolean;
  readonly bucket: string;
  readonly chains: ArchivedChain[];
  /** Chains in the table with nothing archived yet (not a problem: export has not run since they started). */
  readonly notArchived: string[];
  readonly problems: ArchiveProblem[];
}

export interface ArchiveVerifyOptions {
  /** The live table: compared with the archive record by record. */
  readonly reader?: AuditChainReader;
  readonly store?: ArchiveObjectStore;
  /** Clock for retention checks. Default Date.now. */
  readonly now?: () => number;
}

/** The table's lines of one chain, consumed in step with the archive. */
class TableCursor {
  readonly #it: AsyncIterator<string>;
  #next: { seq: number; line: string } | undefined;
  #done = false;

  constructor(lines: AsyncIterable<string>) {
    this.#it = lines[Symbol.asyncIterator]();
  }

  /** The table's line at `seq` (lines before it are skipped), or undefined when the table has none. */
  async at(seq: number): Promise<string | undefined> {
    while (!this.#done && (!this.#next || this.#next.seq < seq)) {
      const r = await this.#it.next();
      if (r.done) this.#done = true;
      else this.#next = { seq: seqOf(r.value) ?? -1, line: r.value };
    }
    return this.#next?.seq === seq ? this.#next.line : undefined;
  }

  close(): void {
    void this.#it.return?.();
  }
}

function seqOf(line: string): number | undefined {
  try {
    const seq = (JSON.parse(line) as { seq?: unknown }).seq;
    return typeof seq === 'number' ? seq : undefined;
  } catch {
    return undefined;
  }
}

function linesOf(body: Buffer): string[] {
  const lines = body.toString('utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

async function verifyChain(
  store: ArchiveObjectStore,
  chainId: string,
  segments: SegmentKey[],
  publicKey: KeyObject,
  now: number,
  table: TableCursor | undefined,
  problems: ArchiveProblem[],
): Promise<ArchivedChain> {
  let head: ChainHead = { seq: 0, prevHash: chainGenesis(chainId) };
  let broken = false;
  let tableProblem = false;
  /** Segments already verified, to compare an overlapping one with (re-read: overlaps are rare, memory stays one segment). */
  const verified: SegmentKey[] = [];
  let cached: { segment: SegmentKey; lines: string[] } | undefined;
  const verifiedLine = async (seq: number): Promise<string | undefined> => {
    const holder = verified.find((v) => v.firstSeq <= seq && seq <= v.lastSeq);
    if (!holder) return undefined;
    if (cached?.segment !== holder) cached = { segment: holder, lines: linesOf((await store.get(holder.key)).body) };
    return cached.lines[seq - holder.firstSeq];
  };
  for (const segment of segments.sort(bySeq)) {
    const object = await store.get(segment.key);
    if (object.lockMode !== 'COMPLIANCE' || !object.retainUntil || object.retainUntil.getTime() <= now) {
      const state = object.lockMode ? `${object.lockMode} until ${object.retainUntil?.toISOString() ?? '?'}` : 'no retention';
      problems.push({ kind: 'not-locked', chainId, key: segment.key, message: `${segment.key} is not under compliance-mode retention (${state}): it can be deleted or replaced` });
    }
    if (broken) continue; // retention is still checked on every object
    const lines = linesOf(object.body);
    if (segment.firstSeq > head.seq + 1) {
      problems.push({ kind: 'gap', chainId, key: segment.key, seq: head.seq + 1, message: `records ${head.seq + 1}..${segment.firstSeq - 1} of chain ${chainId} are missing from the archive (no segment holds them, before ${segment.key})` });
      broken = true;
      continue;
    }
    if (lines.length !== segment.lastSeq - segment.firstSeq + 1 || seqOf(lines[0] ?? '') !== segment.firstSeq || seqOf(lines[lines.length - 1] ?? '') !== segment.lastSeq) {
      problems.push({ kind: 'tampered', chainId, key: segment.key, message: `${segment.key} does not hold records ${segment.firstSeq}..${segment.lastSeq} as its name says` });
      broken = true;
      continue;
    }
    // An overlap (two exporters ran at once) must repeat the archived records byte for byte.
    const overlap = Math.max(0, Math.min(head.seq, segment.lastSeq) - segment.firstSeq + 1);
    for (let i = 0; i < overlap && !broken; i++) {
      if (lines[i] !== (await verifiedLine(segment.firstSeq + i))) {
        problems.push({ kind: 'tampered', chainId, key: segment.key, seq: segment.firstSeq + i, message: `${segment.key} overlaps an earlier segment but differs from it at record ${segment.firstSeq + i}` });
        broken = true;
      }
    }
    if (broken) continue;
    const fresh = lines.slice(overlap);
    if (fresh.length) {
      const check = verifyAuditLogs([{ name: segment.key, text: `${fresh.join('\n')}\n` }], publicKey, { genesis: chainGenesis(chainId), from: head });
      if (!check.ok) {
        const p = check.problem!;
        problems.push({ kind: 'tampered', chainId, key: segment.key, ...(p.seq !== undefined ? { seq: p.seq } : {}), message: `${segment.key} line ${p.line + overlap}: ${p.message}` });
        broken = true;
        continue;
      }
      for (let i = 0; table && !tableProblem && i < fresh.length; i++) {
        const seq = head.seq + 1 + i;
        const live = await table.at(seq);
        if (live !== fresh[i]) {
          tableProblem = true;
          problems.push(
            live === undefined
              ? { kind: 'table-missing', chainId, seq, message: `chain ${chainId}: the table no longer has record ${seq}, which the archive holds (${segment.key}): deleted after export` }
              : { kind: 'table-edited', chainId, seq, message: `chain ${chainId}: the table's record ${seq} differs from the archived one (${segment.key}): edited after export` },
          );
        }
      }
      head = { seq: segment.lastSeq, prevHash: check.headHash };
    }
    verified.push(segment);
  }
  return { chainId, segments: segments.length, verifiedSeq: head.seq, headHash: head.prevHash };
}

/** Verifies the archive (and the table against it, given a reader). Seal signatures are checked under `publicKey`. */
export async function verifyAuditArchive(settings: AuditArchiveSettings, publicKey: KeyObject, options: ArchiveVerifyOptions = {}): Promise<ArchiveVerification> {
  const prefix = settings.prefix ?? '';
  const store = options.store ?? (await openArchiveStore(settings));
  const now = (options.now ?? Date.now)();
  try {
    const problems: ArchiveProblem[] = [];
    const byChain = new Map<string, SegmentKey[]>();
    for (const key of await store.list(prefix)) {
      const segment = parseSegmentKey(prefix, key);
      if (!segment) {
        problems.push({ kind: 'foreign-object', key, message: `${key} is not an archive segment (<chainId>/<firstSeq>-<lastSeq>.jsonl)` });
        continue;
      }
      byChain.set(segment.chainId, [...(byChain.get(segment.chainId) ?? []), segment]);
    }
    const tableChains = options.reader ? new Set((await options.reader.listChains()).map((c) => c.id)) : undefined;
    const chains: ArchivedChain[] = [];
    for (const [chainId, segments] of [...byChain].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      let table: TableCursor | undefined;
      if (tableChains && options.reader) {
        if (tableChains.has(chainId)) table = new TableCursor(options.reader.readLines(chainId, 0));
        else problems.push({ kind: 'chain-deleted', chainId, message: `chain ${chainId} is in the archive but not in the table: deleted` });
      }
      try {
        chains.push(await verifyChain(store, chainId, segments, publicKey, now, table, problems));
      } finally {
        table?.close();
      }
    }
    if (!byChain.size) problems.push({ kind: 'empty', message: `nothing is archived under s3://${store.bucket}/${prefix}` });
    const notArchived = tableChains ? [...tableChains].filter((id) => !byChain.has(id)).sort() : [];
    return { ok: problems.length === 0, bucket: store.bucket, chains, notArchived, problems };
  } finally {
    if (!options.store) store.close();
  }
}
