import { createHash, sign, type KeyObject } from 'node:crypto';
import { open, readFile, truncate, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ensureDirectory } from '../store/atomic.js';

/** One decision as the broker saw it (design.md section 4). */
export interface DecisionRecord {
  readonly time: string;
  readonly decision: 'release' | 'deny';
  /** RELEASED, or the true reason for a denial (finer than what the caller was told). */
  readonly code: string;
  readonly secret: string | null;
  readonly version: number | null;
  readonly moduleId: string | null;
  readonly pcrs: { readonly '0'?: string; readonly '1'?: string; readonly '2'?: string; readonly '4'?: string } | null;
  readonly docSha256: string | null;
  readonly nonce: string | null;
  readonly client: string;
  readonly latencyMs: number;
}

export const GENESIS_HASH = '0'.repeat(64);

/** SHA-256 of one log line (without its newline): what the next line's prevHash must equal. */
export function lineHash(line: string): string {
  return createHash('sha256').update(line, 'utf8').digest('hex');
}

/** The exact bytes a seal signs: its own position and the hash of everything before it. */
export function sealInput(seq: number, prevHash: string): Buffer {
  return Buffer.from(`keygate/audit/seal/v1\n${seq}\n${prevHash}`, 'utf8');
}

interface Pending {
  readonly lines: string[];
  readonly waiters: Array<{ resolve: () => void; reject: (err: unknown) => void }>;
}

/**
 * Append-only, hash-chained JSONL decision log. Every line carries `seq` and
 * the SHA-256 of the previous line; each write batch ends with a seal line
 * signed by the broker key. `append` resolves only after the batch holding
 * the record is fsynced, so a response is never sent for a decision that a
 * crash could lose; concurrent appends share one write and one fsync.
 */
export class AuditLog {
  #handle: FileHandle;
  #seq: number;
  #prevHash: string;
  #pending: Pending = { lines: [], waiters: [] };
  #flushing: Promise<void> | undefined;
  #failed: unknown;

  private constructor(
    handle: FileHandle,
    seq: number,
    prevHash: string,
    private readonly signer: { key: KeyObject; kid: string },
  ) {
    this.#handle = handle;
    this.#seq = seq;
    this.#prevHash = prevHash;
  }

  /**
   * Opens `path` for appending, continuing its chain. A torn last line (a
   * crash in the middle of a write, never acknowledged) is cut off.
   */
  static async open(path: string, signer: { key: KeyObject; kid: string }): Promise<AuditLog> {
    await ensureDirectory(dirname(path));
    let text = '';
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    let keep = text.endsWith('\n') || text === '' ? text.length : text.lastIndexOf('\n') + 1;
    let lines = text.slice(0, keep).split('\n').filter(Boolean);
    // A complete but unparsable last line is also a torn write.
    while (lines.length && !isJsonObject(lines[lines.length - 1]!)) {
      keep -= lines[lines.length - 1]!.length + 1;
      lines = lines.slice(0, -1);
    }
    if (keep !== text.length) await truncate(path, Buffer.byteLength(text.slice(0, keep)));
    const last = lines[lines.length - 1];
    const seq = last ? (JSON.parse(last) as { seq: number }).seq : 0;
    const prevHash = last ? lineHash(last) : GENESIS_HASH;
    const handle = await open(path, 'a', 0o600);
    return new AuditLog(handle, seq, prevHash, signer);
  }

  #line(body: Record<string, unknown>): string {
    this.#seq += 1;
    const line = JSON.stringify({ seq: this.#seq, prevHash: this.#prevHash, ...body });
    this.#prevHash = lineHash(line);
    return line;
  }

  /** Appends a decision; resolves once it is durable. */
  append(record: DecisionRecord): Promise<void> {
    if (this.#failed) return Promise.reject(new Error('audit log is unavailable after a write failure', { cause: this.#failed }));
    return new Promise((resolve, reject) => {
      this.#pending.lines.push(this.#line({ type: 'decision', ...record }));
      this.#pending.waiters.push({ resolve, reject });
      this.#flushing ??= this.#flushLoop();
    });
  }

  async #flushLoop(): Promise<void> {
    // Yield once so appends made in the same tick join this batch.
    await new Promise<void>((r) => setImmediate(r));
    while (this.#pending.lines.length) {
      const batch = this.#pending;
      this.#pending = { lines: [], waiters: [] };
      const seq = this.#seq + 1;
      const sig = sign(null, sealInput(seq, this.#prevHash), this.signer.key).toString('base64url');
      batch.lines.push(this.#line({ type: 'seal', kid: this.signer.kid, sig }));
      try {
        await this.#handle.write(`${batch.lines.join('\n')}\n`);
        await this.#handle.datasync();
        for (const w of batch.waiters) w.resolve();
      } catch (err) {
        // After a failed write the chain position is unknown: refuse further appends (fail closed).
        this.#failed = err;
        for (const w of [...batch.waiters, ...this.#pending.waiters]) w.reject(err);
        this.#pending = { lines: [], waiters: [] };
      }
    }
    this.#flushing = undefined;
  }

  /** Last sequence number written (or queued). */
  get seq(): number {
    return this.#seq;
  }

  get healthy(): boolean {
    return this.#failed === undefined;
  }

  async close(): Promise<void> {
    await this.#flushing;
    await this.#handle.close();
  }
}

function isJsonObject(line: string): boolean {
  try {
    const v = JSON.parse(line) as unknown;
    return typeof v === 'object' && v !== null && typeof (v as { seq?: unknown }).seq === 'number';
  } catch {
    return false;
  }
}
