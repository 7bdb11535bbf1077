import type { KeyObject } from 'node:crypto';
import type { AuditChainReader } from '../chain.js';
import type { AuditArchiveSettings } from '../settings.js';
import { ChainWalk, linesOf, seqOf } from './chain-walk.js';
import { bySeq } from './keys.js';
import { readListing, type ListedSegment } from './listing.js';
import type { ArchiveObjectStore } from './object-store.js';
import { openArchiveStore } from './open-archive.js';
import { lockState } from './retention.js';

/**
 * Checks the S3 archive: each chain's segments, in seq order, as one chain
 * from the chain's genesis (hash links, seqs, seal signatures; chain-walk.ts,
 * the same walk export uses), with no gap between segments; every segment under compliance-mode retention (one that
 * has run out is counted, not a failure); nothing hidden (the listing is
 * ListObjectVersions, and each segment is read by its version id, so a
 * delete marker or a newer version neither hides nor replaces a locked one);
 * and, given the live table, that the table still holds exactly the records
 * the archive has, up to the archived head (an edit, deletion or roll-back
 * after export shows up here). The segments are the archived head: a
 * separate head manifest would be an object like them, no better protected.
 */

/**
 * - gap: a segment is missing (seqs not contiguous between keys)
 * - tampered: a segment's content does not continue the chain (edit, bad seal, content not matching its key, an
 *   object planted under a segment-like key); it is skipped, and the genuine segments around it still verify
 * - not-locked: a segment without retention, or in governance mode (a retention that has run out is not a problem)
 * - short-retention: a compliance-mode segment retained less than export asked for when it wrote it (object
 *   metadata), or, without that metadata, less than one day from when S3 stored it
 * - delete-marker: a delete marker hides a key (the locked version is still read and checked, by version id)
 * - extra-version: a key holds more than one version (the oldest, export's, is checked)
 * - foreign-object: an object under the prefix that export does not write
 * - table-edited / table-missing: the table's record at an archived seq differs from the archive, or is gone
 * - table-behind: the table's chain head is before the archived head (rolled back after export)
 * - chain-deleted: a chain in the archive has no chain in the table
 * - empty: nothing archived
 */
export type ArchiveProblemKind =
  | 'gap'
  | 'tampered'
  | 'not-locked'
  | 'short-retention'
  | 'delete-marker'
  | 'extra-version'
  | 'foreign-object'
  | 'table-edited'
  | 'table-missing'
  | 'table-behind'
  | 'chain-deleted'
  | 'empty';

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
  /** First seq verified: 1, or with `fromSeq` the first record of the first segment present (earlier ones pruned). */
  readonly fromSeq: number;
  /** Last seq verified from `fromSeq` (it stops at the first gap or tampering). */
  readonly verifiedSeq: number;
  readonly headHash: string;
  /** Segments whose compliance retention has run out (they may now be deleted): reported, not a problem. */
  readonly retentionExpired: number;
}

export interface ArchiveVerification {
  readonly ok: boolean;
  readonly bucket: string;
  readonly chains: ArchivedChain[];
  /** Chains in the table with nothing archived yet (not a problem: export has not run since they started). */
  readonly notArchived: string[];
  /** Segments whose retention has run out, over all chains. */
  readonly retentionExpired: number;
  /** The `fromSeq` the caller allowed (records before it may be missing), if any. */
  readonly fromSeq?: number;
  readonly problems: ArchiveProblem[];
}

export interface ArchiveVerifyOptions {
  /** The live table: compared with the archive record by record. */
  readonly reader?: AuditChainReader;
  readonly store?: ArchiveObjectStore;
  /** Clock for retention checks. Default Date.now. */
  readonly now?: () => number;
  /**
   * Segments whose retention ran out may have been deleted (pruned). With `fromSeq`, a chain whose first
   * present segment starts after seq 1 but at or before `fromSeq` is verified from that segment (its first
   * record's prevHash taken as given); without it, missing leading records are a gap.
   */
  readonly fromSeq?: number;
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

interface ChainContext {
  readonly store: ArchiveObjectStore;
  readonly chainId: string;
  readonly publicKey: KeyObject;
  readonly now: number;
  readonly fromSeq: number | undefined;
  /** The live table's chain and its head seq, when the table is compared. */
  readonly table: { readonly cursor: TableCursor; readonly headSeq: number } | undefined;
  readonly problems: ArchiveProblem[];
}

async function verifyChain(context: ChainContext, segments: ListedSegment[]): Promise<ArchivedChain> {
  const { store, chainId, publicKey, now, table, problems } = context;
  const walk = new ChainWalk(store, chainId, publicKey);
  let broken = false;
  let tableProblem = false;
  let retentionExpired = 0;
  for (const segment of segments.sort(bySeq)) {
    // By version id: the version export wrote, even under a delete marker or a newer version.
    const object = await store.get(segment.key, segment.versionId);
    const lock = lockState(object, segment.lastModified, now);
    if (lock.state === 'expired') retentionExpired++;
    else if (lock.state !== 'locked') {
      problems.push({ kind: lock.state, chainId, key: segment.key, message: `${segment.key} is not protected as export protects it (${lock.why}): it can be deleted or replaced` });
    }
    if (broken) continue; // retention is still checked on every object
    const headSeq = walk.head.seq;
    // Pruned leading segments, allowed by the caller: verify from the first present one, its first record's prevHash taken as given.
    const verdict = await walk.step(segment, linesOf(object.body), () => context.fromSeq !== undefined && segment.firstSeq <= context.fromSeq);
    if (verdict.kind === 'gap') {
      const allowed = context.fromSeq !== undefined && headSeq === 0 ? ` (fromSeq ${context.fromSeq} allows only records before ${context.fromSeq} to be missing)` : '';
      problems.push({ kind: 'gap', chainId, key: segment.key, seq: verdict.seq, message: `${verdict.message}${allowed}` });
      broken = true;
      continue;
    }
    if (verdict.kind === 'tampered') {
      // Reported, and skipped: a planted or edited object does not stop the genuine segments after it from verifying.
      problems.push({ kind: 'tampered', chainId, key: segment.key, ...(verdict.seq !== undefined ? { seq: verdict.seq } : {}), message: verdict.message });
      continue;
    }
    for (let i = 0; table && !tableProblem && i < verdict.fresh.length; i++) {
      const seq = verdict.from.seq + 1 + i;
      const live = await table.cursor.at(seq);
      if (live !== verdict.fresh[i]) {
        tableProblem = true;
        // Past the table's head: the chain was rolled back (reported once, as table-behind, below).
        if (live === undefined && seq > table.headSeq) continue;
        problems.push(
          live === undefined
            ? { kind: 'table-missing', chainId, seq, message: `chain ${chainId}: the table no longer has record ${seq}, which the archive holds (${segment.key}): deleted after export` }
            : { kind: 'table-edited', chainId, seq, message: `chain ${chainId}: the table's record ${seq} differs from the archived one (${segment.key}): edited after export` },
        );
      }
    }
  }
  const head = walk.head;
  if (table && head.seq > table.headSeq) {
    problems.push({ kind: 'table-behind', chainId, seq: head.seq, message: `chain ${chainId}: the table's head is at seq ${table.headSeq}, the archive holds records up to ${head.seq}: rolled back after export` });
  }
  return { chainId, segments: segments.length, fromSeq: walk.fromSeq, verifiedSeq: head.seq, headHash: head.prevHash, retentionExpired };
}

/** Verifies the archive (and the table against it, given a reader). Seal signatures are checked under `publicKey`. */
export async function verifyAuditArchive(settings: AuditArchiveSettings, publicKey: KeyObject, options: ArchiveVerifyOptions = {}): Promise<ArchiveVerification> {
  const prefix = settings.prefix ?? '';
  const store = options.store ?? (await openArchiveStore(settings));
  const now = (options.now ?? Date.now)();
  try {
    const listing = readListing(prefix, await store.listVersions(prefix));
    const problems: ArchiveProblem[] = [...listing.problems];
    const byChain = new Map<string, ListedSegment[]>();
    for (const segment of listing.segments) byChain.set(segment.chainId, [...(byChain.get(segment.chainId) ?? []), segment]);
    const tableChains = options.reader ? new Map((await options.reader.listChains()).map((c) => [c.id, c.head.seq])) : undefined;
    const chains: ArchivedChain[] = [];
    for (const [chainId, segments] of [...byChain].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      let table: ChainContext['table'];
      if (tableChains && options.reader) {
        const headSeq = tableChains.get(chainId);
        if (headSeq !== undefined) table = { cursor: new TableCursor(options.reader.readLines(chainId, 0)), headSeq };
        else problems.push({ kind: 'chain-deleted', chainId, message: `chain ${chainId} is in the archive but not in the table: deleted` });
      }
      try {
        chains.push(await verifyChain({ store, chainId, publicKey, now, fromSeq: options.fromSeq, table, problems }, segments));
      } finally {
        table?.cursor.close();
      }
    }
    if (!byChain.size && !listing.problems.length) problems.push({ kind: 'empty', message: `nothing is archived under s3://${store.bucket}/${prefix}` });
    const notArchived = tableChains ? [...tableChains.keys()].filter((id) => !byChain.has(id)).sort() : [];
    const retentionExpired = chains.reduce((n, c) => n + c.retentionExpired, 0);
    return { ok: problems.length === 0, bucket: store.bucket, chains, notArchived, retentionExpired, ...(options.fromSeq !== undefined ? { fromSeq: options.fromSeq } : {}), problems };
  } finally {
    if (!options.store) store.close();
  }
}
