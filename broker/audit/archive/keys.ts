import { CHAIN_ID } from '../chain.js';

/**
 * Object keys of the archive: `<prefix><chainId>/<firstSeq>-<lastSeq>.jsonl`,
 * seqs as 12 digits so S3's lexicographic listing is seq order. When that key
 * is already held by an object export cannot count (anyone with s3:PutObject
 * can claim a predictable key before export writes it), the segment goes to
 * `<firstSeq>-<lastSeq>.<16 random hex>.jsonl`: a key nobody can claim in
 * advance. Segments are judged by their content (hash links, seals), never by
 * their key, so the name only has to be unique.
 */

const SEGMENT_NAME = /^(\d{12})-(\d{12})(?:\.([0-9a-f]{16}))?\.jsonl$/;
const SEQ_DIGITS = 12;

export interface SegmentKey {
  readonly key: string;
  readonly chainId: string;
  readonly firstSeq: number;
  readonly lastSeq: number;
}

export function chainPrefix(prefix: string, chainId: string): string {
  return `${prefix}${chainId}/`;
}

/** `tag`: 16 hex digits for a segment whose plain key was taken (see above). */
export function segmentKey(prefix: string, chainId: string, firstSeq: number, lastSeq: number, tag?: string): string {
  const pad = (n: number): string => String(n).padStart(SEQ_DIGITS, '0');
  return `${chainPrefix(prefix, chainId)}${pad(firstSeq)}-${pad(lastSeq)}${tag ? `.${tag}` : ''}.jsonl`;
}

/** Parses a key listed under `prefix`; undefined for anything export does not write. */
export function parseSegmentKey(prefix: string, key: string): SegmentKey | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash < 0) return undefined;
  const chainId = rest.slice(0, slash);
  const m = SEGMENT_NAME.exec(rest.slice(slash + 1));
  if (!CHAIN_ID.test(chainId) || !m) return undefined;
  const firstSeq = Number(m[1]);
  const lastSeq = Number(m[2]);
  if (firstSeq < 1 || lastSeq < firstSeq) return undefined;
  return { key, chainId, firstSeq, lastSeq };
}

/** Orders segments by first seq, then last seq, then key: chain order, the same on every run. */
export function bySeq(a: SegmentKey, b: SegmentKey): number {
  return a.firstSeq - b.firstSeq || a.lastSeq - b.lastSeq || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
}
