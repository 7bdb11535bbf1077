import type { KeyObject } from 'node:crypto';
import { chainGenesis, type ChainHead } from '../chain.js';
import { verifyAuditLogs } from '../verify-log.js';
import type { ListedSegment } from './listing.js';
import type { ArchiveObjectStore } from './object-store.js';

/**
 * Walks a chain's archived segments from its genesis, in key order (keys.ts
 * bySeq), the way export and verification both find what is archived: a
 * segment counts only if its content links into the chain verified so far
 * (its records are the ones its name says, an overlap repeats the verified
 * records byte for byte, new records hash-link from the head and their seals
 * verify). A segment that does not link is reported and skipped, never
 * trusted for its name: anyone with s3:PutObject can write an object whose
 * key claims any range, so a planted object can neither stop the chain nor
 * hide the genuine segment that overlaps it.
 */

export type LinkVerdict =
  /** The segment continues the chain: `fresh` are its records after the head it started from (`from`). */
  | { readonly kind: 'links'; readonly from: ChainHead; readonly fresh: readonly string[] }
  /** A self-consistent segment after missing records (none of the segments walked so far holds them). */
  | { readonly kind: 'gap'; readonly seq: number; readonly message: string }
  /** The segment does not link: not what export writes (edited, planted, or not matching its name). */
  | { readonly kind: 'tampered'; readonly seq?: number; readonly message: string };

export function linesOf(body: Buffer): string[] {
  const lines = body.toString('utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines;
}

function field(line: string, name: 'seq' | 'prevHash'): unknown {
  try {
    const rec: unknown = JSON.parse(line);
    return typeof rec === 'object' && rec !== null ? (rec as Record<string, unknown>)[name] : undefined;
  } catch {
    return undefined;
  }
}

export function seqOf(line: string): number | undefined {
  const seq = field(line, 'seq');
  return typeof seq === 'number' ? seq : undefined;
}

export function prevHashOf(line: string): string | undefined {
  const prevHash = field(line, 'prevHash');
  return typeof prevHash === 'string' ? prevHash : undefined;
}

export class ChainWalk {
  /** The last record verified (genesis when none). */
  head: ChainHead;
  /** First seq verified: 1, or the first record of an anchored segment (earlier ones pruned). */
  fromSeq = 1;
  readonly #store: ArchiveObjectStore;
  readonly #chainId: string;
  readonly #publicKey: KeyObject | undefined;
  /** Segments that linked, to compare an overlapping one with (re-read: overlaps are rare, memory stays one segment). */
  readonly #linked: ListedSegment[] = [];
  #cached: { segment: ListedSegment; lines: string[] } | undefined;

  /** `publicKey` undefined: seals are not checked (export's explicit --no-signatures), only the hash chain. */
  constructor(store: ArchiveObjectStore, chainId: string, publicKey: KeyObject | undefined) {
    this.#store = store;
    this.#chainId = chainId;
    this.#publicKey = publicKey;
    this.head = { seq: 0, prevHash: chainGenesis(chainId) };
  }

  /** The verified record at `seq`, from the segment that linked it (undefined if none did). */
  async lineAt(seq: number): Promise<string | undefined> {
    const holder = this.#linked.find((v) => v.firstSeq <= seq && seq <= v.lastSeq);
    if (!holder) return undefined;
    if (this.#cached?.segment !== holder) this.#cached = { segment: holder, lines: linesOf((await this.#store.get(holder.key, holder.versionId)).body) };
    return this.#cached.lines[seq - holder.firstSeq];
  }

  #check(lines: readonly string[], name: string, from: ChainHead): ReturnType<typeof verifyAuditLogs> {
    return verifyAuditLogs([{ name, text: `${lines.join('\n')}\n` }], this.#publicKey, { genesis: chainGenesis(this.#chainId), from, allowUnsigned: !this.#publicKey });
  }

  /**
   * Takes the next segment (in bySeq order) with its lines. `anchor`: whether a segment starting after seq 1,
   * while nothing has linked yet, may be verified from its first record's prevHash (leading segments pruned).
   */
  async step(segment: ListedSegment, lines: readonly string[], anchor: () => Promise<boolean> | boolean = () => false): Promise<LinkVerdict> {
    const { key, firstSeq, lastSeq } = segment;
    if (lines.length !== lastSeq - firstSeq + 1 || seqOf(lines[0] ?? '') !== firstSeq || seqOf(lines[lines.length - 1] ?? '') !== lastSeq) {
      return { kind: 'tampered', message: `${key} does not hold records ${firstSeq}..${lastSeq} as its name says` };
    }
    let from = this.head;
    let fromSeq = this.fromSeq;
    const own = prevHashOf(lines[0]!);
    if (this.head.seq === 0 && firstSeq > 1 && own !== undefined && (await anchor())) {
      from = { seq: firstSeq - 1, prevHash: own };
      fromSeq = firstSeq;
    }
    if (firstSeq > from.seq + 1) {
      // Records are missing before it, or it is planted: only a segment that verifies on its own is a gap.
      const self = own === undefined ? undefined : this.#check(lines, key, { seq: firstSeq - 1, prevHash: own });
      if (!self?.ok) return { kind: 'tampered', message: `${key} does not link into chain ${this.#chainId} (verified up to seq ${from.seq}) and does not verify on its own: not a segment export wrote` };
      return { kind: 'gap', seq: from.seq + 1, message: `records ${from.seq + 1}..${firstSeq - 1} of chain ${this.#chainId} are missing from the archive (no segment holds them, before ${key})` };
    }
    const overlap = Math.max(0, Math.min(from.seq, lastSeq) - firstSeq + 1);
    for (let i = 0; i < overlap; i++) {
      if (lines[i] !== (await this.lineAt(firstSeq + i))) {
        return { kind: 'tampered', seq: firstSeq + i, message: `${key} overlaps an earlier segment but differs from it at record ${firstSeq + i}` };
      }
    }
    const fresh = lines.slice(overlap);
    if (fresh.length) {
      const check = this.#check(fresh, key, from);
      if (!check.ok) {
        const p = check.problem!;
        return { kind: 'tampered', ...(p.seq !== undefined ? { seq: p.seq } : {}), message: `${key} line ${p.line + overlap}: ${p.message}` };
      }
      this.head = { seq: lastSeq, prevHash: check.headHash };
    } else {
      this.head = from;
    }
    this.fromSeq = fromSeq;
    this.#linked.push(segment);
    return { kind: 'links', from, fresh };
  }
}
