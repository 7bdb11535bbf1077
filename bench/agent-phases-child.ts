/**
 * bench/broker-child.ts with timestamps, for bench/agent-phases.ts: for every HTTP request the broker serves,
 * when it arrived, when the release began and ended, when its audit append began and became durable, how long
 * the file writes and fdatasyncs took, and the GC pauses, all on this process's clock (performance.now()).
 * Measurement only: it wraps two public methods (ReleaseService.release, AuditLog.append) and FileHandle's
 * write/datasync, and listens on node:http's diagnostics channels; nothing the broker decides changes.
 * 'phases' answers (and clears) the records so far.
 */
import { subscribe } from 'node:diagnostics_channel';
import { open } from 'node:fs/promises';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { AuditLog } from '../broker/audit/log.js';
import { ReleaseService } from '../broker/release.js';

/** One request as the broker saw it (times in ms on this process's performance clock). */
export interface BrokerRequestTrace {
  method: string;
  arrive: number;
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
  /** Event-loop delay since the last 'phases' (ms; perf_hooks.monitorEventLoopDelay, 1 ms resolution): how long a ready callback waited. */
  loopDelay: LoopDelay;
}
export interface LoopDelay { p50: number; p99: number; max: number }

const requests: BrokerRequestTrace[] = [];
const gc: Array<[number, number]> = [];
/** Requests are traced one at a time (bench/agent-phases runs one enclave, sequentially): the one being served. */
let current: BrokerRequestTrace | undefined;
const served = new WeakMap<object, BrokerRequestTrace>();

subscribe('http.server.request.start', (message) => {
  const { request } = message as { request: { method?: string } };
  current = { method: request.method ?? '?', arrive: performance.now(), writeMs: 0, datasyncMs: 0 };
  served.set(request, current);
  requests.push(current);
});
subscribe('http.server.response.finish', (message) => {
  const trace = served.get((message as { request: object }).request);
  if (trace) trace.finish = performance.now();
});

const release = ReleaseService.prototype.release;
ReleaseService.prototype.release = async function (this: ReleaseService, ...args: Parameters<ReleaseService['release']>) {
  const trace = current;
  if (trace) trace.releaseStart = performance.now();
  try {
    return await release.apply(this, args);
  } finally {
    if (trace) trace.releaseEnd = performance.now();
  }
};
const append = AuditLog.prototype.append;
AuditLog.prototype.append = function (this: AuditLog, ...args: Parameters<AuditLog['append']>) {
  const trace = current;
  if (trace) trace.auditStart ??= performance.now();
  const done = append.apply(this, args);
  done.then(
    () => {
      if (trace) trace.auditEnd = performance.now();
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
    const trace = current;
    const t0 = performance.now();
    try {
      return await original.apply(this, args);
    } finally {
      if (trace) trace[field] += performance.now() - t0;
    }
  };
}

new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gc.push([e.startTime, e.duration]);
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
  if (m === 'phases') process.send!({ phases: { requests: requests.splice(0), gc: gc.splice(0), loopDelay: takeLoopDelay(loopDelay) } satisfies BrokerPhases });
});

await import('./broker-child.js');
