/**
 * Simulated enclaves for bench/agent and bench/agent-phases: a group of agents (each with its own RSA key and
 * cache, as in separate enclaves) and ONE NSM simulator they share, re-attesting on an open-loop schedule.
 *
 * A host runs either in the bench process (`inProcessHost`: the historical shape, every enclave and the simulator
 * on the orchestrator's event loop) or in its own process (`startHostChild`: this file forked, driven over IPC).
 * A real enclave runs on its own vCPUs and its NSM signs outside it; spreading the enclaves over a few processes
 * gives them event loops of their own, as a real fleet has, instead of one shared loop where every enclave's
 * synchronous work (P-384 signing in the simulator, RSA-OAEP unwrap, JWS check, HTTP parsing) delays every other
 * enclave's next step. The cores are the same either way (this machine's two, shared with the broker).
 *
 * Latency is counted where the fetch is due: each host times its own enclaves from their scheduled due time to the
 * value returned, on the machine's monotonic clock (bench/agent-phases-clock.ts), so the orchestrator's own
 * scheduling never enters the figure. With `trace`, each fetch also records its steps (challenge GET and POST with
 * the connection's local port, NSM attestation), the main thread's run-queue wait (no core free) during the fetch,
 * and the host's GC pauses, for bench/agent-phases to join with the broker's own timestamps.
 */
import '../test/support/setup.js';
import { AsyncLocalStorage } from 'node:async_hooks';
import { fork, type ChildProcess } from 'node:child_process';
import { subscribe } from 'node:diagnostics_channel';
import { fileURLToPath } from 'node:url';
import { nextMessage } from './ipc.js';
import { PerformanceObserver } from 'node:perf_hooks';
import type { JWK } from 'jose';
import { NsmSimulator } from '../vsock-shim/simulator/nsm-simulator.js';
import type { Nsm } from '../vsock-shim/nsm/client.js';
import { createAgent, type SecretAgent } from '../enclave-agent/index.js';
import { BrokerHttp } from '../enclave-agent/http.js';
import type { PcrValues } from '../lib/pcrs.js';
import { monoMs, monoOffsetMs, runQueueWaitMs } from './agent-phases-clock.js';

/** One broker call as the enclave saw it (monotonic ms). */
export interface CallTrace {
  start: number;
  end: number;
  /** The connection's local port (the broker sees it as the remote port). */
  port?: number;
}
/** One re-attesting fetch (monotonic ms, comparable across processes). */
export interface FetchTrace {
  enclave: number;
  due: number;
  /** When the enclave's timer fired and getSecret was called. */
  start: number;
  end: number;
  calls: CallTrace[];
  attest?: [number, number];
  /** ms this host's main thread waited for a core during the fetch. */
  runQueueMs?: number;
}
export interface OpenLoopPlan {
  /** Monotonic ms of the first due time. */
  t0: number;
  periodMs: number;
  rounds: number;
  /** Enclaves in the whole fleet (all hosts): enclave g is due at t0 + g × period / total + r × period. */
  total: number;
  /** The global index of this host's first enclave. */
  offset: number;
}
export interface OpenLoopResult {
  /** ms from due to value, unsorted. */
  latencies: number[];
  firstDue: number;
  lastEnd: number;
  /** This host process's CPU over the run (µs, user + system); in-process: the whole bench process. */
  cpuUs: number;
  traces: FetchTrace[];
  /** [monotonic start, duration] of this host's GC pauses during the run (with trace). */
  gc: Array<[number, number]>;
}

/** What a host (in this process or a child) offers its orchestrator. */
export interface EnclaveHost {
  readonly pid: number;
  readonly rootPem: string;
  readonly pcrs: PcrValues;
  /** Creates `enclaves` agents against the broker. */
  setup(brokerUrl: string, brokerKey: JWK, enclaves: number): Promise<void>;
  /** `n` sequential fetches on the first enclave (warm-up); the host's CPU µs spent. */
  warm(n: number): Promise<number>;
  /** Every enclave `perEnclave` fetches back to back (closed loop, saturation); latencies (ms) and CPU µs. */
  closed(perEnclave: number): Promise<{ latencies: number[]; cpuUs: number }>;
  open(plan: OpenLoopPlan): Promise<OpenLoopResult>;
  stop(): Promise<void>;
}

const fetchContext = new AsyncLocalStorage<FetchTrace>();
let tracingInstalled = false;
/** Wraps BrokerHttp.call (timing, local port) once per process. Measurement only: nothing the agent decides changes. */
function installTracing(): void {
  if (tracingInstalled) return;
  tracingInstalled = true;
  const call = BrokerHttp.prototype.call;
  BrokerHttp.prototype.call = async function (this: BrokerHttp, ...args: Parameters<BrokerHttp['call']>) {
    const trace = fetchContext.getStore();
    const entry: CallTrace = { start: monoMs(), end: 0 };
    trace?.calls.push(entry);
    try {
      return await call.apply(this, args);
    } finally {
      entry.end = monoMs();
    }
  };
  // node:http announces the request synchronously inside BrokerHttp.call (the fetch's context is still current),
  // with its socket assigned; for a connection still opening, the port is read when the response has arrived.
  const pending = new WeakMap<object, CallTrace>();
  type Req = { socket?: { localPort?: number } | null };
  subscribe('http.client.request.start', (message) => {
    const entry = fetchContext.getStore()?.calls.at(-1);
    const { request } = message as { request: Req };
    if (!entry) return;
    if (request.socket?.localPort) entry.port = request.socket.localPort;
    else pending.set(request, entry);
  });
  subscribe('http.client.response.finish', (message) => {
    const { request } = message as { request: Req };
    const entry = pending.get(request);
    if (entry && request.socket?.localPort) entry.port = request.socket.localPort;
  });
}

interface Enclave {
  agent: SecretAgent;
  advance: () => void;
}

/** The enclaves of one host, in the current process. */
class Host {
  readonly enclaves: Enclave[] = [];
  private constructor(
    readonly simulator: NsmSimulator,
    private readonly trace: boolean,
  ) {}

  static async create(trace: boolean): Promise<Host> {
    if (trace) installTracing();
    return new Host(await NsmSimulator.create({ warn: () => {} }), trace);
  }

  async setup(brokerUrl: string, brokerKey: JWK, enclaves: number): Promise<void> {
    const inner = this.simulator.client();
    const nsm: Nsm = this.trace
      ? {
          attest: async (input) => {
            const t0 = monoMs();
            const document = await inner.attest(input);
            const trace = fetchContext.getStore();
            if (trace) trace.attest = [t0, monoMs()];
            return document;
          },
          describePcr: (i) => inner.describePcr(i),
          getRandom: () => inner.getRandom(),
          close: () => inner.close(),
        }
      : inner;
    for (let i = 0; i < enclaves; i++) {
      let now = 0;
      const agent = await createAgent({ brokerUrl, brokerKey, nsm, clock: () => now });
      this.enclaves.push({ agent, advance: () => void (now += 61_000) });
    }
  }

  async warm(n: number): Promise<number> {
    const c0 = process.cpuUsage();
    const { agent, advance } = this.enclaves[0]!;
    for (let i = 0; i < n; i++) {
      advance(); // past the hard expiry: the next call re-attests
      await agent.getSecret('db-password');
    }
    const c = process.cpuUsage(c0);
    return c.user + c.system;
  }

  async closed(perEnclave: number): Promise<{ latencies: number[]; cpuUs: number }> {
    const c0 = process.cpuUsage();
    const latencies: number[] = [];
    await Promise.all(
      this.enclaves.map(async ({ agent, advance }) => {
        for (let i = 0; i < perEnclave + 2; i++) {
          advance();
          const s = monoMs();
          await agent.getSecret('db-password');
          if (i >= 2) latencies.push(monoMs() - s);
        }
      }),
    );
    const c = process.cpuUsage(c0);
    return { latencies, cpuUs: c.user + c.system };
  }

  async open(plan: OpenLoopPlan): Promise<OpenLoopResult> {
    const gc: Array<[number, number]> = [];
    const observer = this.trace ? new PerformanceObserver((list) => gc.push(...list.getEntries().map((e): [number, number] => [e.startTime + monoOffsetMs, e.duration]))) : undefined;
    observer?.observe({ entryTypes: ['gc'] });
    const c0 = process.cpuUsage();
    const latencies: number[] = [];
    const traces: FetchTrace[] = [];
    let lastEnd = plan.t0;
    await Promise.all(
      this.enclaves.map(async ({ agent, advance }, j) => {
        const g = plan.offset + j;
        for (let r = 0; r < plan.rounds; r++) {
          const due = plan.t0 + (g * plan.periodMs) / plan.total + r * plan.periodMs;
          const wait = due - monoMs();
          if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
          // Timers round to whole ms and may fire early: never start before the due time (it would shorten the latency).
          while (monoMs() < due) await new Promise((resolve) => setImmediate(resolve));
          advance(); // past the hard expiry: the next call re-attests
          if (this.trace) {
            const rq0 = runQueueWaitMs();
            const trace: FetchTrace = { enclave: g, due, start: monoMs(), end: 0, calls: [] };
            await fetchContext.run(trace, () => agent.getSecret('db-password'));
            trace.end = monoMs();
            const rq1 = runQueueWaitMs();
            if (rq0 !== undefined && rq1 !== undefined) trace.runQueueMs = rq1 - rq0;
            traces.push(trace);
            latencies.push(trace.end - due);
            lastEnd = Math.max(lastEnd, trace.end);
          } else {
            await agent.getSecret('db-password');
            const end = monoMs();
            latencies.push(end - due);
            lastEnd = Math.max(lastEnd, end);
          }
        }
      }),
    );
    const c = process.cpuUsage(c0);
    observer?.disconnect();
    return { latencies, firstDue: plan.t0 + (plan.offset * plan.periodMs) / plan.total, lastEnd, cpuUs: c.user + c.system, traces, gc };
  }

  async stop(): Promise<void> {
    for (const e of this.enclaves) await e.agent.close();
    this.enclaves.length = 0;
  }
}

/** A host in the bench process itself (the historical shape: all enclaves share the orchestrator's event loop). */
export async function inProcessHost(trace = false): Promise<EnclaveHost> {
  const host = await Host.create(trace);
  return {
    pid: process.pid,
    rootPem: host.simulator.rootPem,
    pcrs: host.simulator.pcrs,
    setup: (url, key, n) => host.setup(url, key, n),
    warm: (n) => host.warm(n),
    closed: (n) => host.closed(n),
    open: (plan) => host.open(plan),
    stop: () => host.stop(),
  };
}

type HostRequest = { setup: { url: string; key: JWK; enclaves: number } } | { warm: number } | { closed: number } | { open: OpenLoopPlan } | 'stop';

function ask<T>(child: ChildProcess, key: string, send?: HostRequest): Promise<T> {
  return nextMessage(child, key, send, 'enclave host process');
}

/** A host in a process of its own (this file, forked). */
export async function startHostChild(trace = false): Promise<EnclaveHost> {
  const child = fork(fileURLToPath(import.meta.url), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, KEYGATE_BENCH_ENCLAVE_HOST: trace ? 'trace' : '1' },
  });
  const ready = await ask<{ rootPem: string; pcrs: PcrValues }>(child, 'ready');
  return {
    pid: child.pid!,
    rootPem: ready.rootPem,
    pcrs: ready.pcrs,
    setup: (url, key, enclaves) => ask<boolean>(child, 'setUp', { setup: { url, key, enclaves } }).then(() => undefined),
    warm: (n) => ask<number>(child, 'warmed', { warm: n }),
    closed: (n) => ask<{ latencies: number[]; cpuUs: number }>(child, 'closedLoop', { closed: n }),
    open: (plan) => ask<OpenLoopResult>(child, 'opened', { open: plan }),
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send('stop');
      await exited;
    },
  };
}

if (process.env.KEYGATE_BENCH_ENCLAVE_HOST && process.send) {
  const host = await Host.create(process.env.KEYGATE_BENCH_ENCLAVE_HOST === 'trace');
  const send = (m: Record<string, unknown>): void => void process.send!(m);
  process.on('message', async (m: HostRequest) => {
    if (m === 'stop') {
      await host.stop();
      process.exit(0);
    } else if ('setup' in m) {
      await host.setup(m.setup.url, m.setup.key, m.setup.enclaves);
      send({ setUp: true });
    } else if ('warm' in m) send({ warmed: await host.warm(m.warm) });
    else if ('closed' in m) send({ closedLoop: await host.closed(m.closed) });
    else if ('open' in m) send({ opened: await host.open(m.open) });
  });
  send({ ready: { rootPem: host.simulator.rootPem, pcrs: host.simulator.pcrs } });
}
