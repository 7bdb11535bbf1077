/**
 * The primary of `keygate broker --workers N`: it serves no request itself. It forks N broker workers
 * (node:cluster: the primary holds the listening socket and hands connections to the workers in turn),
 * owns what must be one for all of them (the memory nonce registry and quarantine, answered over IPC),
 * restarts a worker that dies (bounded), and stops them all on SIGTERM/SIGINT.
 */
import cluster, { type Worker } from 'node:cluster';
import type { BrokerConfig } from '../config.js';
import type { Logger } from '../log.js';
import { openNonceRegistry } from '../nonce/open-registry.js';
import { Quarantine } from '../rate-limit.js';
import { loadSharedKeys } from '../keys/open-key-source.js';
import { statePaths } from '../state.js';
import { isRequest, type ClusterRequest, type ClusterValue, type ReplyMessage } from './channel.js';
import { WORKER_ENV, WORKERS_ENV } from './worker-config.js';
import { CodedError } from '../../lib/coded-error.js';

/** A worker's message once its listeners are up. */
export interface ReadyMessage {
  readonly kg: 'ready';
  readonly url: string;
  readonly adminUrl?: string;
  readonly gatewayUrl?: string;
}

/** A worker's message when it cannot start: `listen` (the address), `usage` (the config), or `refused` (audit file in use, shared keys...). */
export interface FailedMessage {
  readonly kg: 'failed';
  readonly kind: 'listen' | 'usage' | 'refused';
  readonly message: string;
}

/** The broker could not start: the first worker's reason, as it would have been given by one process. */
export class WorkerStartError extends CodedError<'WORKER_START_FAILED'> {
  override readonly name = 'WorkerStartError';
  constructor(
    readonly kind: FailedMessage['kind'],
    message: string,
  ) {
    super('WORKER_START_FAILED', message);
  }
}

function isFailed(message: unknown): message is FailedMessage {
  return typeof message === 'object' && message !== null && (message as { kg?: unknown }).kg === 'failed' && typeof (message as { message?: unknown }).message === 'string';
}

function isReady(message: unknown): message is ReadyMessage {
  return typeof message === 'object' && message !== null && (message as { kg?: unknown }).kg === 'ready' && typeof (message as { url?: unknown }).url === 'string';
}

export interface PrimaryOptions {
  readonly workers: number;
  /** The script each worker runs and its arguments (the keygate CLI and `broker ...`): the same command, told by its environment that it is a worker. */
  readonly exec: string;
  readonly args: readonly string[];
  readonly log: Logger;
  /** Restarts allowed within `restartWindowMs`; one more and the primary stops everything (a crash loop is not served). Default 5 in 60 s. */
  readonly maxRestarts?: number;
  readonly restartWindowMs?: number;
  /** How long a stopping worker may take before it is killed. Default 30 s. */
  readonly stopTimeoutMs?: number;
}

export interface RunningPrimary {
  /** The public URL, and the admin and gateway URLs of worker 1 (when configured). */
  readonly ready: ReadyMessage;
  /** Resolves with the exit code when everything has stopped (after stop(), or a crash loop: 1). */
  readonly done: Promise<number>;
  /** SIGTERM to every worker, then waits for them (killing any still alive after stopTimeoutMs). */
  stop(): Promise<number>;
}

/**
 * Starts the workers and resolves once every one of them listens. Rejects (all workers stopped) when a
 * worker exits before the whole set is up: a bad config fails the start as with one process.
 */
export async function startPrimary(config: BrokerConfig, options: PrimaryOptions): Promise<RunningPrimary> {
  const { workers: n, log } = options;
  const maxRestarts = options.maxRestarts ?? 5;
  const windowMs = options.restartWindowMs ?? 60_000;
  // Created once here (file kind: exclusively), so the workers only ever load the same signing and challenge keys.
  await loadSharedKeys(config.keys, statePaths(config));
  // The one memory registry and quarantine of the whole broker (the DynamoDB kinds are shared by the workers directly).
  const nonces = await openNonceRegistry(config.nonces.kind === 'memory' ? config.nonces : { kind: 'memory' });
  const r = config.rateLimits;
  const quarantine = new Quarantine(r.quarantineAfterDenials, r.quarantineWindowSeconds * 1000, r.quarantineSeconds * 1000);

  const answer = async (req: ClusterRequest): Promise<ClusterValue> => {
    switch (req.op) {
      case 'nonce.consume':
        return nonces.consume(String(req.nonce), Number(req.rememberUntil), Number(req.now));
      case 'quarantine.is':
        return quarantine.isQuarantined(String(req.identity), Number(req.now));
      case 'quarantine.deny':
        quarantine.recordDenial(String(req.identity), Number(req.now));
        return null;
      default:
        throw new Error('unknown request');
    }
  };

  cluster.setupPrimary({ exec: options.exec, args: [...options.args] });
  const byIndex = new Map<number, Worker>();
  const restarts: number[] = [];
  let stopping = false;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));
  let readyCount = 0;
  let firstReady: ReadyMessage | undefined;
  let startFailed: ((err: Error) => void) | undefined;
  let failure: FailedMessage | undefined;
  let allReady: (() => void) | undefined;

  const fork = (i: number): void => {
    const worker = cluster.fork({ [WORKER_ENV]: String(i), [WORKERS_ENV]: String(n) });
    byIndex.set(i, worker);
    let wasReady = false;
    worker.on('message', (message: unknown) => {
      if (isRequest(message)) {
        answer(message.req).then(
          (value) => reply(worker, { kg: 'rep', id: message.id, ok: true, value }),
          (err: unknown) => reply(worker, { kg: 'rep', id: message.id, ok: false, error: err instanceof Error ? err.message : 'error' }),
        );
        return;
      }
      if (isFailed(message)) {
        failure ??= message;
        return;
      }
      if (isReady(message) && !wasReady) {
        wasReady = true;
        if (i === 1) firstReady = message;
        readyCount++;
        log('info', 'broker worker listening', { worker: i, pid: worker.process.pid, url: message.url });
        if (readyCount >= n) allReady?.();
      }
    });
    worker.on('exit', (code, signal) => {
      if (byIndex.get(i) === worker) byIndex.delete(i);
      if (stopping) return;
      if (!wasReady && startFailed) {
        startFailed(failure ? new WorkerStartError(failure.kind, failure.message) : new WorkerStartError('refused', `broker worker ${i} exited during start (${signal ?? `code ${code}`}); its error is logged above`));
        return;
      }
      const now = Date.now();
      while (restarts.length && restarts[0]! <= now - windowMs) restarts.shift();
      if (restarts.length >= maxRestarts) {
        log('error', 'broker workers keep dying: stopping the broker', { worker: i, code, signal, restarts: restarts.length, windowSeconds: windowMs / 1000 });
        void stopAll().then(() => resolveDone(1));
        return;
      }
      restarts.push(now);
      log('error', 'broker worker died: restarting it', { worker: i, pid: worker.process.pid, code, signal });
      if (wasReady) readyCount--;
      fork(i);
    });
  };

  const stopAll = async (): Promise<void> => {
    stopping = true;
    const alive = [...byIndex.values()];
    const exited = alive.map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    for (const w of alive) if (!w.isDead()) w.process.kill('SIGTERM');
    const timer = setTimeout(() => {
      for (const w of alive) if (!w.isDead()) w.process.kill('SIGKILL');
    }, options.stopTimeoutMs ?? 30_000);
    await Promise.all(exited);
    clearTimeout(timer);
    nonces.close();
  };

  await new Promise<void>((resolve, reject) => {
    allReady = resolve;
    startFailed = (err) => {
      startFailed = undefined;
      void stopAll().then(() => reject(err));
    };
    for (let i = 1; i <= n; i++) fork(i);
  });
  startFailed = undefined;
  return {
    ready: firstReady!,
    done,
    stop: async () => {
      if (!stopping) await stopAll();
      resolveDone(0);
      return done;
    },
  };
}

function reply(worker: Worker, message: ReplyMessage): void {
  // A worker that died meanwhile has no one left waiting for the answer.
  if (worker.isConnected()) worker.send(message);
}
