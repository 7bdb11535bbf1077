import type { KeyObject } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, rename, truncate } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ensureDirectory, syncDirectory } from '../../lib/durable-fs.js';
import { silentLogger, type Logger } from '../log.js';
import { listSegments, segmentPath } from './segments.js';
import { RefusalSampler, type RefusalSettings } from './refusals.js';
import { AuditUnavailableError, type AuditSink, type DecisionRecord, type AdminRecord } from './sink.js';
import { chainBatch, GENESIS_HASH, lineHash, type ChainHead } from './chain.js';

// Re-exported: the chain format lives in chain.ts; older imports name this module.
export { GENESIS_HASH, lineHash, sealInput } from './chain.js';
// Re-exported: the error lives beside the sink interface (the release path may see it, not this module).
export { AuditUnavailableError } from './sink.js';

/** Default size at which the live audit file is rotated into a numbered segment. */
export const DEFAULT_AUDIT_MAX_FILE_BYTES = 64 * 1024 * 1024;

/** What the log needs of an open file (opened for appending); injectable to test write faults. */
export interface AuditFileHandle {
  write(buffer: Buffer, offset: number, length: number): Promise<{ bytesWritten: number }>;
  datasync(): Promise<void>;
  truncate(length: number): Promise<void>;
  close(): Promise<void>;
}

export interface AuditLogOptions {
  /** Where write failures and recoveries are reported. */
  readonly log?: Logger;
  /** Rotate the live file into a numbered segment before it would grow past this. */
  readonly maxFileBytes?: number;
  /** Opens a file for appending (default: fs.open with 'a', mode 0600). */
  readonly openFile?: (path: string) => Promise<AuditFileHandle>;
  /** Delay between recovery attempts after a failed write. Default 1000 ms. */
  readonly retryMs?: number;
  /** Budget for individual refusal records; the rest go into summaries. */
  readonly refusals?: Partial<RefusalSettings>;
  readonly clock?: () => number;
}


interface Queued {
  readonly body: Record<string, unknown>;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The default opener: for appending ('a'), and O_DSYNC, so each write returns only once its bytes (and the
 * size that makes them readable) are on stable storage, as a write followed by fdatasync: one system call
 * and one thread-pool round trip per batch instead of two (issue 15: the audit's share of a release).
 */
/** Whether node:fs has O_DSYNC here (a platform without it gets write + fdatasync, as an injected opener does). */
const HAS_DSYNC = constants.O_DSYNC !== undefined;
const openForAppend = (path: string): Promise<AuditFileHandle> =>
  HAS_DSYNC ? open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC, 0o600) : open(path, 'a', 0o600);

/** Short description of a write error for logs: errno code and message. */
function describe(err: unknown): { code?: string; message: string } {
  const e = err as NodeJS.ErrnoException;
  return { ...(typeof e?.code === 'string' ? { code: e.code } : {}), message: e instanceof Error ? e.message : String(err) };
}

/**
 * Append-only, hash-chained JSONL decision log. Every line carries `seq` and
 * the SHA-256 of the previous line; each write batch ends with a seal line
 * signed by the broker key. `append` resolves only after every byte of the
 * batch holding the record (seal included) is written and fdatasynced, so a
 * response is never sent for a decision that a crash could lose; concurrent
 * appends share one write and one fsync.
 *
 * Sequence numbers and prevHash are assigned when a batch is written, and the
 * in-memory chain head only advances once the batch is durable. A short
 * write, a write error (ENOSPC, EFBIG) or a failed datasync rejects every
 * waiter of the batch and everything queued behind it, is logged once, and
 * makes the log unhealthy (appends fail fast). A timer then retries: reopen
 * the file, cut it back to the last durable byte (the torn, never
 * acknowledged tail), and write a seal continuing the chain from the last
 * durable record; once that is durable the log is healthy again.
 */
export class AuditLog implements AuditSink {
  readonly #path: string;
  readonly #signer: { key: KeyObject; kid: string };
  readonly #log: Logger;
  readonly #maxFileBytes: number;
  readonly #openFile: (path: string) => Promise<AuditFileHandle>;
  /** The file is opened by openForAppend (O_DSYNC): a completed write is durable, no fdatasync follows. */
  readonly #writesAreDurable: boolean;
  readonly #retryMs: number;
  readonly #refusals: RefusalSampler;
  #handle: AuditFileHandle | undefined;
  /** Durable bytes in the live file. */
  #size: number;
  /** Chain head of the last durable line. */
  #seq: number;
  #prevHash: string;
  #nextSegment: number;
  #queue: Queued[] = [];
  #flushing: Promise<void> | undefined;
  #failed: unknown;
  #retryTimer: NodeJS.Timeout | undefined;
  #recovering: Promise<void> | undefined;
  #closed = false;

  private constructor(path: string, signer: { key: KeyObject; kid: string }, options: AuditLogOptions, state: { handle: AuditFileHandle; size: number; seq: number; prevHash: string; nextSegment: number }) {
    this.#path = path;
    this.#signer = signer;
    this.#log = options.log ?? silentLogger;
    this.#maxFileBytes = options.maxFileBytes ?? DEFAULT_AUDIT_MAX_FILE_BYTES;
    this.#openFile = options.openFile ?? openForAppend;
    this.#writesAreDurable = options.openFile === undefined && HAS_DSYNC;
    this.#retryMs = options.retryMs ?? 1000;
    this.#handle = state.handle;
    this.#size = state.size;
    this.#seq = state.seq;
    this.#prevHash = state.prevHash;
    this.#nextSegment = state.nextSegment;
    this.#refusals = new RefusalSampler(options.refusals ?? {}, options.clock ?? Date.now, (summary) => this.#enqueue({ type: 'summary', ...summary }));
  }

  /**
   * Opens `path` for appending, continuing its chain (from the newest
   * rotated segment when the live file is empty or missing). Records after
   * the last seal were never acknowledged (a crash or failed write in the
   * middle of a batch): they are cut off, torn last line included.
   */
  static async open(path: string, signer: { key: KeyObject; kid: string }, options: AuditLogOptions = {}): Promise<AuditLog> {
    await ensureDirectory(dirname(path));
    const text = await readOrEmpty(path);
    const tail = lastSealed(text);
    const keep = Buffer.byteLength(text.slice(0, tail.end));
    if (tail.end !== text.length) {
      await truncate(path, keep);
      (options.log ?? silentLogger)('warn', 'audit log: cut records after the last seal (never acknowledged)', { file: path, bytes: Buffer.byteLength(text) - keep });
    }
    const segments = await listSegments(path);
    let head = tail.last;
    if (!head && segments.length) head = lastSealed(await readFile(segments[segments.length - 1]!.path, 'utf8')).last;
    const seq = head ? (JSON.parse(head) as { seq: number }).seq : 0;
    const prevHash = head ? lineHash(head) : GENESIS_HASH;
    const handle = await (options.openFile ?? openForAppend)(path);
    // The live file may have just been created: its directory entry must be durable before any record is acknowledged.
    await syncDirectory(dirname(path));
    const nextSegment = segments.length ? segments[segments.length - 1]!.n + 1 : 1;
    return new AuditLog(path, signer, options, { handle, size: keep, seq, prevHash, nextSegment });
  }

  /** Appends a decision; resolves once it is durable. */
  append(record: DecisionRecord): Promise<void> {
    return this.#enqueue({ type: 'decision', ...record });
  }

  /** Appends an admin API action (never a value); resolves once it is durable. */
  appendAdmin(record: AdminRecord): Promise<void> {
    return this.#enqueue({ type: 'admin', ...record });
  }

  /**
   * Records a refusal that does not depend on what was asked (an unverified
   * document, a rate limit, a bad request): individually (durable before it
   * resolves) while the client's small budget lasts, otherwise only counted
   * into the next periodic summary record (resolves at once).
   */
  appendRefusal(record: DecisionRecord): Promise<void> {
    return this.#refusals.take(record) ? this.append(record) : Promise.resolve();
  }

  #enqueue(body: Record<string, unknown>): Promise<void> {
    if (this.#closed) return Promise.reject(new AuditUnavailableError('audit log is closed'));
    if (this.#failed !== undefined) return Promise.reject(new AuditUnavailableError('audit log is unavailable after a write failure', { cause: this.#failed }));
    return new Promise((resolve, reject) => {
      this.#queue.push({ body, resolve, reject });
      this.#flushing ??= this.#flushLoop();
    });
  }

  /** Chains `bodies` after the durable head and appends a seal: the bytes and the new head. */
  #chain(bodies: ReadonlyArray<Record<string, unknown>>): { bytes: Buffer; seq: number; prevHash: string } {
    const batch = chainBatch({ seq: this.#seq, prevHash: this.#prevHash }, bodies, this.#signer);
    return { bytes: Buffer.from(`${batch.lines.join('\n')}\n`, 'utf8'), seq: batch.head.seq, prevHash: batch.head.prevHash };
  }

  async #flushLoop(): Promise<void> {
    // Yield once so appends made in the same tick join this batch.
    await new Promise<void>((r) => setImmediate(r));
    while (this.#queue.length && this.#failed === undefined) {
      const batch = this.#queue;
      this.#queue = [];
      const next = this.#chain(batch.map((q) => q.body));
      try {
        if (this.#size > 0 && this.#size + next.bytes.length > this.#maxFileBytes) await this.#rotate();
        await this.#writeDurably(next.bytes);
      } catch (err) {
        this.#fail(err, batch);
        break;
      }
      this.#seq = next.seq;
      this.#prevHash = next.prevHash;
      this.#size += next.bytes.length;
      for (const w of batch) w.resolve();
    }
    this.#flushing = undefined;
  }

  /** Every byte written (a short write continues with the rest; no progress is an error), then fdatasync. */
  async #writeDurably(bytes: Buffer): Promise<void> {
    const handle = this.#handle;
    if (!handle) throw new AuditUnavailableError('audit file is not open');
    let done = 0;
    while (done < bytes.length) {
      const { bytesWritten } = await handle.write(bytes, done, bytes.length - done);
      if (!(bytesWritten > 0)) throw new AuditUnavailableError(`short write: ${done} of ${bytes.length} bytes written`);
      done += bytesWritten;
    }
    if (!this.#writesAreDurable) await handle.datasync();
  }

  /** Renames the (durable, sealed) live file to the next segment and starts a new one. */
  async #rotate(): Promise<void> {
    await rename(this.#path, segmentPath(this.#path, this.#nextSegment));
    this.#nextSegment += 1;
    this.#size = 0;
    const old = this.#handle;
    this.#handle = undefined;
    await old?.close().catch(() => {});
    this.#handle = await this.#openFile(this.#path);
    await syncDirectory(dirname(this.#path));
  }

  #fail(err: unknown, batch: Queued[]): void {
    const first = this.#failed === undefined;
    this.#failed = err;
    const error = new AuditUnavailableError('audit write failed; nothing was acknowledged', { cause: err });
    for (const w of [...batch, ...this.#queue]) w.reject(error);
    this.#queue = [];
    if (first) {
      this.#log('error', 'audit log write failed: releases stop until it recovers', { file: this.#path, durableSeq: this.#seq, cause: describe(err) });
    }
    this.#scheduleRecovery();
  }

  #scheduleRecovery(): void {
    if (this.#closed || this.#retryTimer) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#recovering = this.#recover().finally(() => (this.#recovering = undefined));
    }, this.#retryMs);
    this.#retryTimer.unref();
  }

  /** Reopen, cut the torn tail back to the last durable byte, prove writes work with a seal. */
  async #recover(): Promise<void> {
    try {
      const old = this.#handle;
      this.#handle = undefined;
      // After a failed write or fsync the old descriptor's state is unknown: never reuse it.
      await old?.close().catch(() => {});
      this.#handle = await this.#openFile(this.#path);
      // The open may have created the live file (a rotation renamed the old one, then failed to open its
      // successor): its directory entry, and the rename before it, must be durable before anything written to
      // it is acknowledged, as rotation and open() make them.
      await syncDirectory(dirname(this.#path));
      await this.#handle.truncate(this.#size);
      // With O_DSYNC no fdatasync follows the seal's write: the cut is made durable here (recovery is rare).
      if (this.#writesAreDurable) await this.#handle.datasync();
      const next = this.#chain([]);
      await this.#writeDurably(next.bytes);
      this.#seq = next.seq;
      this.#prevHash = next.prevHash;
      this.#size += next.bytes.length;
      this.#failed = undefined;
      this.#log('info', 'audit log recovered: writes succeed again', { file: this.#path, seq: this.#seq });
    } catch (err) {
      this.#failed = err;
      this.#scheduleRecovery();
    }
  }

  /** Seq and hash of the last durable line (what `keygate audit verify` reports as the head). */
  get head(): ChainHead {
    return { seq: this.#seq, prevHash: this.#prevHash };
  }

  /** The live file being appended to. */
  get path(): string {
    return this.#path;
  }

  get healthy(): boolean {
    return this.#failed === undefined && !this.#closed;
  }

  /**
   * Stops for good without writing another byte: the file may not be ours
   * any more (this broker's audit lock was taken over). Queued and future
   * appends are refused, the pending refusal summary is dropped, no recovery
   * runs; a write already under way finishes, then the file is closed.
   */
  abandon(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#failed ??= new AuditUnavailableError(reason);
    this.#stopRefusals();
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const err = new AuditUnavailableError(`audit log abandoned: ${reason}`);
    for (const w of this.#queue) w.reject(err);
    this.#queue = [];
    void (async () => {
      await this.#flushing;
      await this.#recovering;
      await this.#handle?.close().catch(() => {});
      this.#handle = undefined;
    })();
  }

  /** Stops the refusal summaries; counts that never made it into a record are logged (error), not silently lost. */
  #stopRefusals(): void {
    const lost = this.#refusals.stop();
    if (lost) this.#log('error', 'audit log: counted refusals were never written (their summary record is lost)', { file: this.#path, lostRefusals: lost.refusals, since: lost.since });
  }

  /** Writes the pending refusal summary, waits for queued writes, closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#refusals.flush().catch(() => {});
    this.#stopRefusals();
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    await this.#recovering;
    await this.#flushing;
    await this.#handle?.close();
    this.#handle = undefined;
  }
}

async function readOrEmpty(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return '';
  }
}

/** End offset (in characters) of the last complete seal line in `text`, and that line. */
function lastSealed(text: string): { end: number; last: string | undefined } {
  let end = text.lastIndexOf('\n') + 1;
  while (end > 0) {
    const start = text.lastIndexOf('\n', end - 2) + 1;
    const line = text.slice(start, end - 1);
    if (isSeal(line)) return { end, last: line };
    end = start;
  }
  return { end: 0, last: undefined };
}

function isSeal(line: string): boolean {
  try {
    const v = JSON.parse(line) as { seq?: unknown; type?: unknown } | null;
    return typeof v === 'object' && v !== null && typeof v.seq === 'number' && v.type === 'seal';
  } catch {
    return false;
  }
}
