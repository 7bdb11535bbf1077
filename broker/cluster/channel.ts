/**
 * The request/reply channel between a broker worker and the primary
 * (`keygate broker --workers N`), over node:cluster's IPC pipe. The primary
 * owns what must be one across workers (the memory nonce registry, the memory
 * quarantine); workers ask it. Messages are plain JSON; each request carries
 * an id, and an unanswered request fails after a deadline (fail closed: the
 * caller turns it into its own "unavailable" error and releases nothing).
 */

import { CodedError } from '../../lib/coded-error.js';

/** A worker's request to the primary. */
export type ClusterRequest =
  | { readonly op: 'nonce.consume'; readonly nonce: string; readonly rememberUntil: number; readonly now: number }
  | { readonly op: 'quarantine.is'; readonly identity: string; readonly now: number }
  | { readonly op: 'quarantine.deny'; readonly identity: string; readonly now: number };

/** What the primary answers (the value of a nonce consume, a boolean, or nothing). */
export type ClusterValue = string | boolean | null;

/** The wire form: `kg` tags keygate's messages so nothing else on the channel is mistaken for one. */
export interface RequestMessage {
  readonly kg: 'req';
  readonly id: number;
  readonly req: ClusterRequest;
}
export interface ReplyMessage {
  readonly kg: 'rep';
  readonly id: number;
  readonly ok: boolean;
  readonly value?: ClusterValue;
  readonly error?: string;
}

/** The primary could not be asked or did not answer in time. */
export class ClusterChannelError extends CodedError<'CLUSTER_CHANNEL_UNAVAILABLE'> {
  override readonly name = 'ClusterChannelError';
  constructor(message: string) {
    super('CLUSTER_CHANNEL_UNAVAILABLE', message);
  }
}

/** The process side that can send to and hear from the other end (a `cluster` worker's `process`). */
export interface IpcEndpoint {
  send?(message: unknown, sendHandle?: undefined, options?: undefined, callback?: (error: Error | null) => void): boolean;
  readonly connected?: boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  on(event: 'disconnect', listener: () => void): unknown;
}

export function isReply(message: unknown): message is ReplyMessage {
  return typeof message === 'object' && message !== null && (message as { kg?: unknown }).kg === 'rep' && typeof (message as { id?: unknown }).id === 'number';
}

export function isRequest(message: unknown): message is RequestMessage {
  if (typeof message !== 'object' || message === null || (message as { kg?: unknown }).kg !== 'req') return false;
  const { id, req } = message as { id?: unknown; req?: { op?: unknown } };
  return typeof id === 'number' && typeof req === 'object' && req !== null && typeof req.op === 'string';
}

/** The worker end: one outstanding map of requests, answered by id; all fail at once if the primary goes away. */
export class WorkerChannel {
  readonly #pending = new Map<number, { resolve: (v: ClusterValue) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  #next = 1;
  #closed = false;

  constructor(
    private readonly endpoint: IpcEndpoint,
    private readonly timeoutMs = 5_000,
  ) {
    endpoint.on('message', (message) => {
      if (!isReply(message)) return;
      const waiting = this.#pending.get(message.id);
      if (!waiting) return;
      this.#pending.delete(message.id);
      clearTimeout(waiting.timer);
      if (message.ok) waiting.resolve(message.value ?? null);
      else waiting.reject(new ClusterChannelError(`the primary refused: ${message.error ?? 'unknown error'}`));
    });
    endpoint.on('disconnect', () => this.#failAll('the primary is gone'));
  }

  /** Asks the primary; rejects with ClusterChannelError when it cannot be asked or does not answer within the deadline. */
  ask(req: ClusterRequest): Promise<ClusterValue> {
    if (this.#closed || !this.endpoint.send || this.endpoint.connected === false) return Promise.reject(new ClusterChannelError('no channel to the primary'));
    const id = this.#next++;
    return new Promise<ClusterValue>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new ClusterChannelError(`the primary did not answer within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      const message: RequestMessage = { kg: 'req', id, req };
      try {
        this.endpoint.send!(message, undefined, undefined, (err) => {
          if (!err) return;
          const waiting = this.#pending.get(id);
          if (!waiting) return;
          this.#pending.delete(id);
          clearTimeout(waiting.timer);
          reject(new ClusterChannelError(`cannot reach the primary: ${err.message}`));
        });
      } catch (err) {
        this.#pending.delete(id);
        clearTimeout(timer);
        reject(new ClusterChannelError(`cannot reach the primary: ${(err as Error).message}`));
      }
    });
  }

  #failAll(reason: string): void {
    this.#closed = true;
    for (const [id, waiting] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(waiting.timer);
      waiting.reject(new ClusterChannelError(reason));
    }
  }

  close(): void {
    this.#failAll('closed');
  }
}
