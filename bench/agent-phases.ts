/**
 * bench/agent-phases (on request: `npm run bench -- agent-phases`): where the time of a re-attesting getSecret
 * goes, fetch by fetch, to find what makes its p99. One enclave fetches sequentially from a broker in its own
 * process (bench/agent-phases-child.ts, which timestamps each request it serves). Per fetch:
 *
 *   agent side (this process):  challenge GET round trip | NSM simulator attestation (P-384 sign + CBOR) |
 *                               POST round trip | open (JWE decrypt, JWS verify, claims) | the rest
 *   broker side (its process):  POST before the release (HTTP, body) | release (verify, policy, unwrap, seal) |
 *                               audit append until durable (of which write and fdatasync) | response
 *   transport:                  POST round trip seen by the agent minus the time the broker held the request
 *                               (from its 'request' to its handler's response.end(); before, the response's 'finish', which fires once the last byte
 *                               has been handed to the kernel: loopback transfer plus both HTTP stacks' work
 *                               outside those two events; a stall here would be Nagle / delayed ACK)
 *
 * Each side is timed on its own clock (two processes' clocks are not compared). GC pauses overlapping a fetch
 * are counted per process. Reports p50 / p90 / p99 / max per phase, and for the slowest 1 % of fetches which
 * phase took the most time above its median. Measured in steady state: warm-up passes of BENCH_PHASES_WARM_PER_PASS
 * (500) fetches until two agree within 3 % on CPU per fetch, agent and broker process together (bench/steady.ts);
 * the first pass's phase p50/p99 are reported beside as the cold figures. BENCH_PHASES_ENCLAVES=32 (with
 * BENCH_PHASES_HOSTS=N) times the open-loop shape of bench/agent instead (bench/agent-phases-open.ts). BENCH_PHASES_FETCHES (default 1000), BENCH_PHASES_STATE (the broker's
 * files: default tmpdir; e.g. /dev/shm for tmpfs). Results in bench/results/agent-phases.json.
 */
import '../test/support/setup.js';
import { loadavg } from 'node:os';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import type { JWK } from 'jose';
import { NsmSimulator } from '../vsock-shim/simulator/nsm-simulator.js';
import type { Nsm } from '../vsock-shim/nsm/client.js';
import { createAgent } from '../enclave-agent/index.js';
import { BrokerHttp } from '../enclave-agent/http.js';
import { quantile as pct, writeResults } from './harness.js';
import { overlapMs } from './agent-phases-clock.js';
import { forkPhasesBroker } from './agent-phases-broker.js';
import { threadCpuNs, threadSplit, warmUntilSteady } from './steady.js';
import type { BrokerPhases, BrokerRequestTrace, LoopDelay } from './agent-phases-child.js';
import { benchAgentPhasesOpen } from './agent-phases-open.js';

const FETCHES = Number(process.env.BENCH_PHASES_FETCHES ?? 1000);
const WARM_PER_PASS = Number(process.env.BENCH_PHASES_WARM_PER_PASS ?? 500);

interface AgentFetch {
  start: number;
  end: number;
  /** [start, end] of each broker call the agent made (challenge GET, then POST). */
  http: Array<[number, number]>;
  attest?: [number, number];
}

const PHASES = ['total', 'get', 'attest', 'post', 'open', 'agentOther', 'brokerBeforeRelease', 'release', 'audit', 'auditWrite', 'auditDatasync', 'brokerAfterAudit', 'transport', 'gcAgent', 'gcBroker'] as const;
type Phase = (typeof PHASES)[number];


function phasesOf(f: AgentFetch, get: BrokerRequestTrace | undefined, post: BrokerRequestTrace | undefined, agentGc: Array<[number, number]>, brokerGc: Array<[number, number]>): Record<Phase, number> {
  const [g, p] = f.http as [[number, number], [number, number]];
  const attest = f.attest ?? [g[1], g[1]];
  const total = f.end - f.start;
  const open = f.end - p[1];
  const r: Record<Phase, number> = {
    total,
    get: g[1] - g[0],
    attest: attest[1] - attest[0],
    post: p[1] - p[0],
    open,
    agentOther: 0,
    brokerBeforeRelease: NaN,
    release: NaN,
    audit: NaN,
    auditWrite: NaN,
    auditDatasync: NaN,
    brokerAfterAudit: NaN,
    transport: NaN,
    gcAgent: overlapMs(agentGc, f.start, f.end),
    gcBroker: NaN,
  };
  r.agentOther = total - r.get - r.attest - r.post - r.open;
  // The answer left the broker when its handler called response.end(); 'finish' fires only once the broker's loop
  // gets to it, often after the agent already has the answer (which made `transport` negative).
  const sent = post?.respond ?? post?.finish;
  if (post && sent !== undefined && post.releaseStart !== undefined && post.auditStart !== undefined && post.auditEnd !== undefined) {
    r.brokerBeforeRelease = post.releaseStart - post.arrive;
    r.release = post.auditStart - post.releaseStart;
    r.audit = post.auditEnd - post.auditStart;
    r.auditWrite = post.writeMs;
    r.auditDatasync = post.datasyncMs;
    r.brokerAfterAudit = sent - post.auditEnd;
    r.transport = r.post - (sent - post.arrive);
    r.gcBroker = overlapMs(brokerGc, get?.arrive ?? post.arrive, sent);
  }
  return r;
}

export async function benchAgentPhases(): Promise<Record<string, unknown>> {
  // BENCH_PHASES_ENCLAVES > 1: the open-loop shape of bench/agent, steps on both sides (bench/agent-phases-open.ts).
  if (Number(process.env.BENCH_PHASES_ENCLAVES ?? 1) > 1) return benchAgentPhasesOpen();
  const loadAvg1Start = loadavg()[0]!;
  const { child, next } = forkPhasesBroker();

  const simulator = await NsmSimulator.create({ warn: () => {} });
  const p = simulator.pcrs;
  await next('ready');
  const url = await next<string>('url', { start: { roots: [simulator.rootPem], bind: [{ secret: 'db-password', value: 'bench', pcrs: { 0: p[0]!, 1: p[1]!, 2: p[2]! }, ttlSeconds: 60 }] } });

  // Agent-side timestamps: each broker call (BrokerHttp.call, from the request made to the JSON answer parsed), and
  // the NSM wrapped. (node:http's client diagnostics channels fire at moments that do not bound the exchange.)
  let tracing: AgentFetch | undefined;
  const call = BrokerHttp.prototype.call;
  BrokerHttp.prototype.call = async function (this: BrokerHttp, ...args: Parameters<BrokerHttp['call']>) {
    const trace = tracing;
    const t0 = performance.now();
    try {
      return await call.apply(this, args);
    } finally {
      trace?.http.push([t0, performance.now()]);
    }
  };
  const agentGc: Array<[number, number]> = [];
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) agentGc.push([e.startTime, e.duration]);
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  // How long a ready callback waited in this process (sync work such as the JWE decrypt, GC, or no core free).
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();
  const takeLoopDelay = (): LoopDelay => {
    const out = { p50: loopDelay.percentile(50) / 1e6, p99: loopDelay.percentile(99) / 1e6, max: loopDelay.max / 1e6 };
    loopDelay.reset();
    return out;
  };
  let agentLoopDelay: LoopDelay | undefined;
  const inner = simulator.client();
  const nsm: Nsm = {
    attest: async (input) => {
      const t0 = performance.now();
      const document = await inner.attest(input);
      if (tracing) tracing.attest = [t0, performance.now()];
      return document;
    },
    describePcr: (i) => inner.describePcr(i),
    getRandom: () => inner.getRandom(),
    close: () => inner.close(),
  };

  const brokerKey = (await (await fetch(`${url}/v1/broker-key`)).json()) as JWK;
  let now = 0;
  const agent = await createAgent({ brokerUrl: url, brokerKey, nsm, clock: () => now });
  const fetches: AgentFetch[] = [];
  /** `count` traced fetches, one after the other. */
  const traced = async (count: number, into: AgentFetch[]): Promise<void> => {
    for (let i = 0; i < count; i++) {
      now += 61_000; // past the hard expiry: the next call re-attests
      tracing = { start: performance.now(), end: 0, http: [] };
      await agent.getSecret('db-password');
      tracing.end = performance.now();
      into.push(tracing);
      tracing = undefined;
    }
  };
  const cpuUs = async (): Promise<{ agent: number; broker: number }> => {
    const c = process.cpuUsage();
    const b = await next<NodeJS.CpuUsage>('cpu', 'cpu');
    return { agent: c.user + c.system, broker: b.user + b.system };
  };
  let cold: { fetches: AgentFetch[]; broker: BrokerPhases; agentGc: Array<[number, number]> } | undefined;
  let threads: { agent: ReturnType<typeof threadSplit>; broker: ReturnType<typeof threadSplit> } = { agent: undefined, broker: undefined };
  let warmUp: Awaited<ReturnType<typeof warmUntilSteady>>;
  try {
    // Steady state on both sides (bench/steady.ts): passes until two agree on CPU per fetch, agent + broker.
    await next<BrokerPhases>('phases', 'phases');
    agentGc.length = 0;
    warmUp = await warmUntilSteady(
      async (n) => {
        const c0 = await cpuUs();
        const pass: AgentFetch[] = [];
        await traced(n, pass);
        const c1 = await cpuUs();
        const served = await next<BrokerPhases>('phases', 'phases');
        cold ??= { fetches: pass, broker: served, agentGc: agentGc.slice() };
        agentGc.length = 0;
        return (c1.agent - c0.agent + c1.broker - c0.broker) / n;
      },
      { perPass: WARM_PER_PASS },
    );
    const agentThreads0 = threadCpuNs(process.pid);
    const brokerThreads0 = threadCpuNs(child.pid!);
    takeLoopDelay();
    await traced(FETCHES, fetches);
    agentLoopDelay = takeLoopDelay();
    threads = { agent: threadSplit(process.pid, agentThreads0, threadCpuNs(process.pid), FETCHES), broker: threadSplit(child.pid!, brokerThreads0, threadCpuNs(child.pid!), FETCHES) };
  } finally {
    loopDelay.disable();
    gcObserver.disconnect();
    await agent.close();
  }
  const broker = await next<BrokerPhases>('phases', 'phases');
  child.send('stop');

  // At one enclave the broker serves GET, POST, GET, POST... in the agent's order.
  const rowsOf = (agentFetches: AgentFetch[], served: BrokerPhases, gcAgent: Array<[number, number]>): Array<Record<Phase, number>> => {
    const gets = served.requests.filter((r) => r.method === 'GET');
    const posts = served.requests.filter((r) => r.method === 'POST');
    return agentFetches.map((f, i) => phasesOf(f, gets[i], posts[i], gcAgent, served.gc));
  };
  const statsOf = (of: Array<Record<Phase, number>>): Record<string, { p50: number; p90: number; p99: number; max: number; mean: number }> => {
    const out: Record<string, { p50: number; p90: number; p99: number; max: number; mean: number }> = {};
    for (const phase of PHASES) {
      const v = of.map((r) => r[phase]).filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
      if (v.length) out[phase] = { p50: pct(v, 0.5), p90: pct(v, 0.9), p99: pct(v, 0.99), max: v.at(-1)!, mean: v.reduce((a, b) => a + b, 0) / v.length };
    }
    return out;
  };
  const rows = rowsOf(fetches, broker, agentGc);
  const stats = statsOf(rows);
  const coldStats = cold ? statsOf(rowsOf(cold.fetches, cold.broker, cold.agentGc)) : {};
  // The slowest 1 %: which phase ran furthest above its own median (what made the tail).
  const slowest = [...rows].sort((a, b) => b.total - a.total).slice(0, Math.max(1, Math.ceil(rows.length / 100)));
  const blame: Record<string, number> = {};
  for (const r of slowest) {
    let worst: Phase = 'agentOther';
    let excess = -Infinity;
    for (const phase of PHASES.filter((x) => x !== 'total' && x !== 'auditWrite' && x !== 'auditDatasync')) {
      const e = r[phase] - (stats[phase]?.p50 ?? 0);
      if (Number.isFinite(e) && e > excess) [worst, excess] = [phase, e];
    }
    blame[worst] = (blame[worst] ?? 0) + 1;
  }

  console.log(`\nbench/agent-phases: ${rows.length} re-attesting fetches, 1 enclave, broker in its own process, steady state after ${warmUp.requests} (ms; cold = first warm-up pass)`);
  console.log(`${'phase'.padEnd(20)}${['p50', 'p90', 'p99', 'max', 'mean', 'cold p50', 'cold p99'].map((h) => h.padStart(9)).join('')}`);
  for (const [phase, s] of Object.entries(stats)) console.log(`${phase.padEnd(20)}${[s.p50, s.p90, s.p99, s.max, s.mean, coldStats[phase]?.p50 ?? NaN, coldStats[phase]?.p99 ?? NaN].map((x) => x.toFixed(2).padStart(9)).join('')}`);
  console.log(`warm-up: ${warmUp.requests} fetches in ${warmUp.passes} passes; CPU per fetch by pass, agent + broker (µs): ${warmUp.cpuUsPerRequestByPass.map((x) => x.toFixed(0)).join(' → ')}`);
  const split = (t: ReturnType<typeof threadSplit>): string => (t ? `${t.mainUs.toFixed(0)} / ${t.otherUs.toFixed(0)}` : 'n/a');
  console.log(`CPU per fetch by thread, main / other (µs): agent ${split(threads.agent)}, broker ${split(threads.broker)}`);
  console.log(`slowest 1 % (${slowest.length} fetches), phase furthest above its median: ${Object.entries(blame).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const gcPauses = (g: Array<[number, number]>): string => `${g.length} pauses, ${g.reduce((a, [, d]) => a + d, 0).toFixed(1)} ms, longest ${Math.max(0, ...g.map(([, d]) => d)).toFixed(2)} ms`;
  console.log(`GC: agent process ${gcPauses(agentGc)}; broker process ${gcPauses(broker.gc)}`);
  const delay = (d: LoopDelay | undefined): string => (d ? `${d.p50.toFixed(2)} / ${d.p99.toFixed(2)} / ${d.max.toFixed(2)}` : 'n/a');
  console.log(`event-loop delay p50 / p99 / max (ms): agent process ${delay(agentLoopDelay)}; broker process ${delay(broker.loopDelay)}`);
  console.log(`load average (1 min) at start / end: ${loadAvg1Start.toFixed(2)} / ${loadavg()[0]!.toFixed(2)}`);
  const file = writeResults('agent-phases', {
    fetches: rows.length,
    brokerFiles: process.env.BENCH_PHASES_STATE ?? 'tmpdir',
    phases: stats,
    warmUpFetches: warmUp.requests,
    warmUpPasses: warmUp.passes,
    cpuUsPerFetchByWarmUpPass: warmUp.cpuUsPerRequestByPass,
    coldPhases: coldStats,
    ...(threads.agent ? { agentMainUsPerFetch: threads.agent.mainUs, agentOtherThreadsUsPerFetch: threads.agent.otherUs } : {}),
    ...(threads.broker ? { brokerMainUsPerFetch: threads.broker.mainUs, brokerOtherThreadsUsPerFetch: threads.broker.otherUs } : {}),
    slowestPercentBlame: blame,
    gcAgent: { pauses: agentGc.length, ms: agentGc.reduce((a, [, d]) => a + d, 0), longestMs: Math.max(0, ...agentGc.map(([, d]) => d)) },
    ...(agentLoopDelay ? { loopDelayAgentMs: agentLoopDelay } : {}),
    loopDelayBrokerMs: broker.loopDelay,
    gcBroker: { pauses: broker.gc.length, ms: broker.gc.reduce((a, [, d]) => a + d, 0), longestMs: Math.max(0, ...broker.gc.map(([, d]) => d)) },
    loadAvg1Start,
    loadAvg1End: loadavg()[0]!,
  });
  console.log(`wrote ${file}`);
  return { stats };
}
