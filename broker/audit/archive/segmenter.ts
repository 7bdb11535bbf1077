/**
 * Cuts a chain's lines into archive segments that each end on a seal line,
 * so every segment is covered by its own signature and no write batch is
 * split. Lines after the last seal (a batch not yet complete in what was
 * read) are left for the next export.
 */

export interface SegmentLimits {
  /** At most this many lines per segment, unless one batch alone is longer. Default 10 000. */
  readonly maxLines?: number;
  /** At most this many bytes per segment (newlines included), unless one batch alone is larger. Default 8 MiB. */
  readonly maxBytes?: number;
}

export const DEFAULT_SEGMENT_LIMITS = { maxLines: 10_000, maxBytes: 8 * 1024 * 1024 } as const;

export interface Segment {
  readonly lines: readonly string[];
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly bytes: number;
}

function recordOf(line: string): { seq?: unknown; type?: unknown } {
  try {
    const rec: unknown = JSON.parse(line);
    return typeof rec === 'object' && rec !== null ? (rec as { seq?: unknown; type?: unknown }) : {};
  } catch {
    return {};
  }
}

export interface Segmented {
  /** Lines read after the last seal: not exported this time. */
  pending: number;
}

/**
 * Yields segments of whole batches (each ending on a seal) within `limits`.
 * `state.pending` holds, once the iteration is done, the count of unsealed lines left.
 */
export async function* segmentLines(lines: AsyncIterable<string>, limits: SegmentLimits = {}, state: Segmented = { pending: 0 }): AsyncGenerator<Segment> {
  const maxLines = limits.maxLines ?? DEFAULT_SEGMENT_LIMITS.maxLines;
  const maxBytes = limits.maxBytes ?? DEFAULT_SEGMENT_LIMITS.maxBytes;
  let segment: string[] = [];
  let segmentBytes = 0;
  let batch: string[] = [];
  let batchBytes = 0;
  const cut = (): Segment => {
    const seqOf = (line: string): number => {
      const seq = recordOf(line).seq;
      return typeof seq === 'number' ? seq : NaN;
    };
    const out = { lines: segment, firstSeq: seqOf(segment[0]!), lastSeq: seqOf(segment[segment.length - 1]!), bytes: segmentBytes };
    segment = [];
    segmentBytes = 0;
    return out;
  };
  for await (const line of lines) {
    batch.push(line);
    batchBytes += Buffer.byteLength(line) + 1;
    if (recordOf(line).type !== 'seal') continue;
    if (segment.length && (segment.length + batch.length > maxLines || segmentBytes + batchBytes > maxBytes)) yield cut();
    segment.push(...batch);
    segmentBytes += batchBytes;
    batch = [];
    batchBytes = 0;
  }
  if (segment.length) yield cut();
  state.pending = batch.length;
}
