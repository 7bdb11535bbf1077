/**
 * bench/broker-child.ts with timestamps, for bench/agent-phases.ts: for every HTTP request the broker serves,
 * when it arrived, when the release began and ended, when its audit append began and became durable, how long
 * the file writes and fdatasyncs took, and the GC pauses, all in ms on the machine's MONOTONIC clock (bench/clock.ts
 * `monoMs`: CLOCK_MONOTONIC is one clock for every process on the machine, so these times compare with the enclave
 * hosts' (bench/agent-phases-host.ts)). Requests may overlap (32 enclaves): each one's trace follows its own
 * asynchronous context (AsyncLocalStorage entered when node:http announces the request). Per request also the
 * remote port (to join it to the enclave's call) and how long the broker's main thread waited for a core while the
 * request was in the process (the run-queue wait, /proc/self/task/PID/schedstat). Measurement only: it wraps two public methods (ReleaseService.release, AuditLog.append) and FileHandle's
 * write/datasync, and listens on node:http's diagnostics channels; nothing the broker decides changes.
 * 'phases' answers (and clears) the records so far.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { subscribe } from 'node:diagnostics_channel';
import { open } from 'node:fs/promises';
import { ServerResponse } from 'node:http';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { AuditLog } from '../broker/audit/log.js';
import { ReleaseService } from '../broker/release.js';
import { monoMs, monoOffsetMs, runQueueWaitMs } from './agent-phases-clock.js';

/** One request as the broker saw it (times in ms on this process's performance clock). */
export interface BrokerRequestTrace {
  method: string;
  /** The enclave side's port of the connection (joins this request to the call that sent it). */
  remotePort?: number;
  arrive: number;
  /** When the handler called response.end() (the answer handed to the socket; 'finish' can fire later, once this loop gets to it). */
  respond?: number;
  /** ms the broker's main thread waited for a core between arrive and finish. */
  runQueueMs?: number;
  runQueueAtArrive?: number;
  finish?: number;
  releaseStart?: number;
  releaseEnd?: number;
  auditStart?: number;
  auditEnd?: number;
  /** Time spent in FileHandle.write and .datasync calls that began during this request. */
  writeMs: number;
  datasyncMs: number;
}
export interface BrokerPhases {
  requests: BrokerRequestTrace[];
  /** [start, duration] of every GC pause. */
  gc: Array<[number, number]>;
  /** [start, duration] of every audit FileHandle.datasync (a batch's fdatasync may serve several requests). */
  datasyncs: Array<[number, number]>;
  /** Event-loop delay since the last 'phases' (ms; perf_hooks.monitorEventLoopDelay, 1 ms resolution): how long a ready callback waited. */
  loopDelay: LoopDelay;
}
export interface LoopDelay { p50: number; p99: number; max: number }

const requests: BrokerRequestTrace[] = [];
const gc: Array<[number, number]> = [];
const datasyncs: Array<[number, number]> = [];
/** The request whose handling this asynchronous context belongs to. */
const context = new AsyncLocalStorage<BrokerRequestTrace>();
const served = new WeakMap<object, BrokerRequestTrace>();

subscribe('http.server.request.start', (message) => {
  const { request, socket } = message as { request: { method?: string }; socket: { remotePort?: number } };
  const trace: BrokerRequestTrace = { method: request.method ?? '?', arrive: monoMs(), runQueueAtArrive: runQueueWaitMs(), writeMs: 0, datasyncMs: 0, ...(socket.remotePort ? { remotePort: socket.remotePort } : {}) };
  served.set(request, trace);
  requests.push(trace);
  // Published synchronously just before the server emits 'request': the handler, and every promise it chains, runs in this context.
  context.enterWith(trace);
});
subscribe('http.server.response.finish', (message) => {
  const trace = served.get((message as { request: object }).request);
  if (trace) {
    trace.finish = monoMs();
    const rq = runQueueWaitMs();
    if (rq !== undefined && trace.runQueueAtArrive !== undefined) trace.runQueueMs = rq - trace.runQueueAtArrive;
    delete trace.runQueueAtArrive;
  }
});

const end = ServerResponse.prototype.end;
ServerResponse.prototype.end = function (this: ServerResponse, ...args: unknown[]) {
  const trace = served.get(this.req);
  if (trace) trace.respond ??= monoMs();
  return (end as (...a: unknown[]) => ServerResponse).apply(this, args);
} as typeof end;

const release = ReleaseService.prototype.release;
ReleaseService.prototype.release = async function (this: ReleaseService, ...args: Parameters<ReleaseService['release']>) {
  const trace = context.getStore();
  if (trace) trace.releaseStart = monoMs();
  try {
    return await release.apply(this, args);
  } finally {
    if (trace) trace.releaseEnd = monoMs();
  }
};
const append = AuditLog.prototype.append;
AuditLog.prototype.append = function (this: AuditLog, ...args: Parameters<AuditLog['append']>) {
  const trace = context.getStore();
  if (trace) trace.auditStart ??= monoMs();
  const done = append.apply(this, args);
  done.then(
    () => {
      if (trace) trace.auditEnd = monoMs();
    },
    () => {},
  );
  return done;
};

// FileHandle's prototype is not exported: take it from a handle.
const probe = await open('/dev/null', 'r');
const fileHandle = Object.getPrototypeOf(probe) as Record<'write' | 'datasync', (...a: unknown[]) => Promise<unknown>>;
await probe.close();
for (const [method, field] of [['write', 'writeMs'], ['datasync', 'datasyncMs']] as const) {
  const original = fileHandle[method];
  fileHandle[method] = async function (this: unknown, ...args: unknown[]) {
    // The audit's flush loop runs in the context of the request that started it: with one enclave that is the
    // request being served; with several, a batch's write is charged to one of the requests it serves.
    const trace = context.getStore();
    const t0 = monoMs();
    try {
      return await original.apply(this, args);
    } finally {
      const ms = monoMs() - t0;
      if (trace) trace[field] += ms;
      if (method === 'datasync') datasyncs.push([t0, ms]);
    }
  };
}

new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gc.push([e.startTime + monoOffsetMs, e.duration]);
}).observe({ entryTypes: ['gc'] });

const loopDelay = monitorEventLoopDelay({ resolution: 1 });
loopDelay.enable();
/** The histogram's figures in ms (it counts ns), then reset. */
function takeLoopDelay(h: ReturnType<typeof monitorEventLoopDelay>): LoopDelay {
  const out = { p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6 };
  h.reset();
  return out;
}

process.on('message', (m: unknown) => {
  if (m === 'phases') process.send!({ phases: { requests: requests.splice(0), gc: gc.splice(0), datasyncs: datasyncs.splice(0), loopDelay: takeLoopDelay(loopDelay) } satisfies BrokerPhases });
});

await import('./broker-child.js');
