import { randomBytes, type KeyObject } from 'node:crypto';
import { CHAIN_ID, chainGenesis, type AuditChainReader, type ChainHead, type ChainSummary } from '../chain.js';
import type { AuditArchiveSettings } from '../settings.js';
import { verifyAuditLogs } from '../verify-log.js';
import { ArchiveError, type ArchiveErrorCode } from './errors.js';
import { ChainWalk, linesOf, seqOf } from './chain-walk.js';
import { bySeq, chainPrefix, segmentKey } from './keys.js';
import { readListing } from './listing.js';
import type { ArchiveObjectStore } from './object-store.js';
import { openArchiveStore, requireObjectLock } from './open-archive.js';
import { SKEW_MS, lockState } from './retention.js';
import { segmentLines, type SegmentLimits } from './segmenter.js';

/**
 * `keygate audit export`: copies each chain's sealed lines that are not yet
 * archived to S3 as compliance-locked segments. The archive is its own
 * record of progress (no state elsewhere): a chain's last archived line is
 * the end of the last compliance-locked segment that links into the chain
 * from its genesis (chain-walk.ts; each read by version id from the version
 * listing, so a delete marker cannot hide it), the table must
 * still hold that record byte for byte, and the table's lines are exported
 * only if they continue it (hash link, seqs, seal signatures), so tampering
 * in the table is refused rather than laundered into the archive.
 */

export interface ExportOptions {
  /** Clock for the retention dates (read before each put). Default Date.now. */
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
  /** Its compliance retention (ISO 8601): asked for just before the put, or the one already there. */
  readonly retainUntil?: string;
}

export interface ChainExport {
  readonly chainId: string;
  readonly segments: ExportedSegment[];
  /** The chain's last archived seq after this run (0: nothing archived). */
  readonly archivedSeq: number;
  /** Lines read after the last seal, left for the next run. */
  readonly pending: number;
  /** What the chain's archive holds besides its linked, locked segments: reported, skipped, not a refusal. */
  readonly warnings: ArchiveWarning[];
  readonly error?: { readonly code: ArchiveErrorCode; readonly message: string };
}

/**
 * Found in a chain's archive, reported, and not a reason to stop exporting (the chain is archived after its
 * last segment that links): anyone with s3:PutObject or s3:DeleteObject could otherwise stop a chain forever,
 * since a locked object cannot be removed. `keygate audit verify-archive` reports them as problems.
 * - tampered / gap: a segment-like object that does not link into the chain (planted, edited)
 * - not-locked: an object without compliance retention (not counted as archived)
 * - short-retention: a linked segment retained less than export asked (or under the 1-day floor)
 * - delete-marker / extra-version / foreign-object: as in the version listing (listing.ts)
 * - conflict: the key a segment should have gone to was taken; the segment went under a random-tagged key
 */
export interface ArchiveWarning {
  readonly kind: 'tampered' | 'gap' | 'not-locked' | 'short-retention' | 'delete-marker' | 'extra-version' | 'foreign-object' | 'conflict';
  readonly key: string;
  readonly seq?: number;
  readonly message: string;
}

export interface ArchiveExport {
  /** True when every chain exported (or had nothing new). */
  readonly ok: boolean;
  readonly bucket: string;
  /** Each segment written is locked until its put + this many days (retain-until computed just before each put). */
  readonly retentionDays: number;
  /** False when seal signatures were not checked (--no-signatures). */
  readonly sealsChecked: boolean;
  readonly chains: ChainExport[];
}

const DAY_MS = 86_400_000;

/**
 * Where the archive of a chain ends: its last line's position, hash and bytes (genesis when nothing is archived),
 * found by walking the chain's segments from its genesis (chain-walk.ts, as verification does): only
 * compliance-locked segments whose content links into the chain count. Anything else under the chain's prefix
 * (a planted object claiming any range, an unlocked copy, a delete marker, a second version) is reported as a
 * warning and skipped: it can neither stop the chain nor move its head. A segment retained shorter than it
 * should be still counts (its records are archived; the warning says it may be deletable early).
 */
async function archivedHead(
  reader: AuditChainReader,
  store: ArchiveObjectStore,
  settings: AuditArchiveSettings,
  chainId: string,
  publicKey: KeyObject | undefined,
  now: number,
  warnings: ArchiveWarning[],
): Promise<ChainHead & { line?: string }> {
  const prefix = settings.prefix ?? '';
  const listing = readListing(prefix, await store.listVersions(chainPrefix(prefix, chainId)));
  for (const p of listing.problems) warnings.push({ kind: p.kind, key: p.key, message: p.message });
  const walk = new ChainWalk(store, chainId, publicKey);
  for (const segment of listing.segments.filter((s) => s.chainId === chainId).sort(bySeq)) {
    // By version id: the version export wrote, even under a delete marker or a newer version.
    const object = await store.get(segment.key, segment.versionId);
    const lock = lockState(object, segment.lastModified, now);
    if (lock.state === 'not-locked') {
      warnings.push({ kind: 'not-locked', key: segment.key, message: `${segment.key} is not protected as export protects it (${lock.why}): not counted as archived` });
      continue;
    }
    if (lock.state === 'short-retention') warnings.push({ kind: 'short-retention', key: segment.key, message: `${segment.key}: ${lock.why}: it may be deletable early` });
    const lines = linesOf(object.body);
    // Leading segments pruned after their retention ran out: the first one present counts if the table still
    // holds its first record byte for byte (and its records verify from that record's prevHash).
    const verdict = await walk.step(segment, lines, async () => (await tableLineAt(reader, chainId, segment.firstSeq)) === lines[0]);
    if (verdict.kind !== 'links') warnings.push({ kind: verdict.kind, key: segment.key, ...(verdict.seq !== undefined ? { seq: verdict.seq } : {}), message: verdict.message });
  }
  if (walk.head.seq === 0) return { seq: 0, prevHash: chainGenesis(chainId) };
  const line = await walk.lineAt(walk.head.seq);
  return { ...walk.head, ...(line !== undefined ? { line } : {}) };
}

async function tableLineAt(reader: AuditChainReader, chainId: string, seq: number): Promise<string | undefined> {
  for await (const line of reader.readLines(chainId, seq - 1)) return seqOf(line) === seq ? line : undefined;
  return undefined;
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

async function exportChain(reader: AuditChainReader, store: ArchiveObjectStore, settings: AuditArchiveSettings, chain: ChainSummary, now: () => number, options: ExportOptions, progress: Progress): Promise<void> {
  const chainId = chain.id;
  const publicKey = options.publicKey === 'unchecked' ? undefined : options.publicKey;
  const archived = await archivedHead(reader, store, settings, chainId, publicKey, now(), progress.warnings);
  let head: ChainHead = { seq: archived.seq, prevHash: archived.prevHash };
  progress.archivedSeq = head.seq;
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
    const body = Buffer.from(text, 'utf8');
    const put = await putSegment(store, settings, chainId, segment, body, now, progress.warnings);
    progress.segments.push({ key: put.key, firstSeq: segment.firstSeq, lastSeq: segment.lastSeq, bytes: body.length, written: put.written, ...(put.retainUntil ? { retainUntil: put.retainUntil.toISOString() } : {}) });
    head = { seq: segment.lastSeq, prevHash: check.headHash };
    progress.archivedSeq = head.seq;
  }
}

/**
 * Writes one segment under its key, compliance-locked until now + retentionDays, the retain-until computed
 * just before the put (a long run does not shorten its last segments). The key already taken: by a concurrent
 * exporter's identical, locked segment, that counts; by anything else (other bytes, no lock, a short lock,
 * unreadable), the segment goes under a key with a random tag nobody could have claimed in advance, and the
 * squatted key is reported.
 */
async function putSegment(
  store: ArchiveObjectStore,
  settings: AuditArchiveSettings,
  chainId: string,
  segment: { readonly firstSeq: number; readonly lastSeq: number },
  body: Buffer,
  now: () => number,
  warnings: ArchiveWarning[],
): Promise<{ key: string; written: boolean; retainUntil?: Date }> {
  const prefix = settings.prefix ?? '';
  const key = segmentKey(prefix, chainId, segment.firstSeq, segment.lastSeq);
  const retainUntil = new Date(now() + settings.retentionDays * DAY_MS);
  if ((await store.putLocked(key, body, retainUntil)) === 'written') return { key, written: true, retainUntil };
  let why: string;
  try {
    const there = await store.get(key);
    const lock = lockState(there, undefined, now());
    // A concurrent exporter asked for about the same date; a squatter's shorter lock does not count.
    const longEnough = (there.retainUntil?.getTime() ?? 0) >= retainUntil.getTime() - SKEW_MS;
    if (there.body.equals(body) && lock.state === 'locked' && longEnough) return { key, written: false, ...(there.retainUntil ? { retainUntil: there.retainUntil } : {}) };
    why = !there.body.equals(body)
      ? 'it holds other bytes'
      : `it holds these records but ${'why' in lock ? lock.why : lock.state === 'expired' ? 'its retention has run out' : `retained only until ${there.retainUntil?.toISOString() ?? '?'}`}`;
  } catch (err) {
    if (!(err instanceof ArchiveError)) throw err;
    why = `it cannot be read (${err.message})`;
  }
  const alternate = segmentKey(prefix, chainId, segment.firstSeq, segment.lastSeq, randomBytes(8).toString('hex'));
  warnings.push({ kind: 'conflict', key, message: `${key} was already taken by an object export did not write (${why}): not overwritten; records ${segment.firstSeq}..${segment.lastSeq} written under ${alternate}` });
  const retainAlternate = new Date(now() + settings.retentionDays * DAY_MS);
  if ((await store.putLocked(alternate, body, retainAlternate)) === 'written') return { key: alternate, written: true, retainUntil: retainAlternate };
  throw new ArchiveError('ARCHIVE_CONFLICT', `${alternate} (a fresh random key) is already taken: not overwritten (run keygate audit verify-archive)`);
}

interface Progress {
  segments: ExportedSegment[];
  warnings: ArchiveWarning[];
  archivedSeq: number;
  pending: number;
}

/** Exports every chain of `reader`; a chain that fails is reported and the others still run. */
export async function exportAuditChains(reader: AuditChainReader, settings: AuditArchiveSettings, options: ExportOptions): Promise<ArchiveExport> {
  const store = options.store ?? (await openArchiveStore(settings));
  try {
    await requireObjectLock(store);
    const now = options.now ?? Date.now;
    const chains: ChainExport[] = [];
    for (const chain of await reader.listChains()) {
      const id = chain.id;
      const progress: Progress = { segments: [], warnings: [], archivedSeq: 0, pending: 0 };
      try {
        if (!CHAIN_ID.test(id)) throw new ArchiveError('ARCHIVE_BAD_CHAIN_ID', `chain id ${JSON.stringify(id)} is not a valid chain id`);
        await exportChain(reader, store, settings, chain, now, options, progress);
        chains.push({ chainId: id, ...progress });
      } catch (err) {
        // One chain's refusal (tampering, a conflict, S3 failing on it) does not stop the others.
        if (!(err instanceof ArchiveError)) throw err;
        chains.push({ chainId: id, ...progress, error: { code: err.code, message: err.message } });
      }
    }
    return { ok: chains.every((c) => !c.error), bucket: store.bucket, retentionDays: settings.retentionDays, sealsChecked: options.publicKey !== 'unchecked', chains };
  } finally {
    if (!options.store) store.close();
  }
}
