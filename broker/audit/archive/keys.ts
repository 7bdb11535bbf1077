import { CHAIN_ID } from '../chain.js';

/**
 * Object keys of the archive: `<prefix><chainId>/<firstSeq>-<lastSeq>.jsonl`,
 * seqs as 12 digits so S3's lexicographic listing is seq order.
 */

const SEGMENT_NAME = /^(\d{12})-(\d{12})\.jsonl$/;
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

export function segmentKey(prefix: string, chainId: string, firstSeq: number, lastSeq: number): string {
  const pad = (n: number): string => String(n).padStart(SEQ_DIGITS, '0');
  return `${chainPrefix(prefix, chainId)}${pad(firstSeq)}-${pad(lastSeq)}.jsonl`;
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

/** Orders segments by first seq, then last seq: chain order. */
export function bySeq(a: SegmentKey, b: SegmentKey): number {
  return a.firstSeq - b.firstSeq || a.lastSeq - b.lastSeq;
}
