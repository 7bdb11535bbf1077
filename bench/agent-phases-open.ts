/**
 * bench/agent-phases with BENCH_PHASES_ENCLAVES > 1: the OPEN-LOOP shape of bench/agent (each of ENCLAVES enclaves
 * re-attests once every BENCH_PHASES_PERIOD_MS (250), phases spread, latency counted from when the fetch was due),
 * with every fetch broken into steps on BOTH sides, on one clock (CLOCK_MONOTONIC, bench/agent-phases-clock.ts),
 * to say what makes the p99: which step, and in which process.
 *
 * Enclaves run in the bench process (BENCH_PHASES_HOSTS=0, the historical bench/agent shape) or spread over
 * BENCH_PHASES_HOSTS child processes (bench/agent-phases-host.ts); the broker runs in its own process with
 * timestamps (bench/agent-phases-child.ts). Each broker request is joined to the enclave call that sent it by the
 * connection's port and time. Per fetch (ms):
 *
 *   late          due -> the enclave's timer fired (its host's event loop was busy, or no core was free)
 *   getToBroker   challenge GET sent -> the broker's 'request' (agent write, loopback, broker's loop picking it up)
 *   getBroker     the broker held the GET ('request' -> its handler calls response.end())
 *   getBack       GET response.end() -> the agent has the JSON (broker's write, loopback, the host's loop picking it up, parse)
 *   attest        NSM simulator (P-384 sign + CBOR), in the host process
 *   agentGaps     the agent's own steps between the calls (base64, JSON) and continuations waiting for their loop
 *   postToBroker, postBeforeRelease, release, audit (append until durable), brokerAfterAudit, postBack
 *   open          JWE decrypt, JWS verify, claims (host process)
 *   runQueueAgent / runQueueBroker   ms the host's / broker's main thread waited for a core (CPU contention)
 *   gcAgent / gcBroker               GC pauses overlapping the fetch in each process
 *
 * For the slowest 1 % of fetches: the mean of every step beside its median over all fetches, and which step ran
 * furthest above its median in each. BENCH_PHASES_PIN="0/1" pins the enclaves to CPU 0 and the broker to CPU 1. Results in bench/results/agent-phases-open.json.
 */
import { loadavg } from 'node:os';
import type { JWK } from 'jose';
import { quantile as pct, writeResults } from './harness.js';
import { forkPhasesBroker } from './agent-phases-broker.js';
import { warmUntilSteady } from './steady.js';
import type { BrokerPhases, BrokerRequestTrace } from './agent-phases-child.js';
import { inProcessHost, startHostChild, type EnclaveHost, type FetchTrace } from './agent-phases-host.js';
import { monoMs, overlapMs, pin, pinning } from './agent-phases-clock.js';

const ENCLAVES = Number(process.env.BENCH_PHASES_ENCLAVES ?? 32);
const HOSTS = Number(process.env.BENCH_PHASES_HOSTS ?? 0);
const PERIOD_MS = Number(process.env.BENCH_PHASES_PERIOD_MS ?? 250);
const ROUNDS = Number(process.env.BENCH_PHASES_OPEN_ROUNDS ?? 100);
const WARM_PER_PASS = Number(process.env.BENCH_PHASES_WARM_PER_PASS ?? 500);
/** BENCH_PHASES_PIN="0/1": the enclave hosts (or this process, with no hosts) on CPU 0, the broker on CPU 1 (bench/agent-phases-clock.ts pin). */
const PIN = pinning(process.env.BENCH_PHASES_PIN);

const STEPS = ['total', 'late', 'getToBroker', 'getBroker', 'getBack', 'attest', 'agentGaps', 'postToBroker', 'postBeforeRelease', 'release', 'audit', 'brokerAfterAudit', 'postBack', 'open', 'runQueueAgent', 'runQueueBroker', 'gcAgent', 'gcBroker', 'datasyncInAudit'] as const;
type Step = (typeof STEPS)[number];
/** Steps that are parts of `total` (the others are overlapping indicators). */
const PARTS: readonly Step[] = ['late', 'getToBroker', 'getBroker', 'getBack', 'attest', 'agentGaps', 'postToBroker', 'postBeforeRelease', 'release', 'audit', 'brokerAfterAudit', 'postBack', 'open'];


/** The broker request sent on `port` that arrived within [from, to]. */
function joiner(requests: BrokerRequestTrace[]): (port: number | undefined, from: number, to: number) => BrokerRequestTrace | undefined {
  const byPort = new Map<number, BrokerRequestTrace[]>();
  for (const r of requests) if (r.remotePort) byPort.set(r.remotePort, [...(byPort.get(r.remotePort) ?? []), r]);
  return (port, from, to) => (port === undefined ? undefined : byPort.get(port)?.find((r) => r.arrive >= from - 0.05 && r.arrive <= to));
}

function stepsOf(f: FetchTrace, get: BrokerRequestTrace | undefined, post: BrokerRequestTrace | undefined, agentGc: Array<[number, number]>, brokerGc: Array<[number, number]>, datasyncs: Array<[number, number]>): Record<Step, number> | undefined {
  const [g, p] = f.calls;
  if (!g || !p || !f.attest || !get?.respond || !post?.respond || post.releaseStart === undefined || post.auditStart === undefined || post.auditEnd === undefined) return undefined;
  const r: Record<Step, number> = {
    total: f.end - f.due,
    late: f.start - f.due,
    getToBroker: get.arrive - g.start,
    getBroker: get.respond! - get.arrive,
    getBack: g.end - get.respond!,
    attest: f.attest[1] - f.attest[0],
    agentGaps: g.start - f.start + (f.attest[0] - g.end) + (p.start - f.attest[1]),
    postToBroker: post.arrive - p.start,
    postBeforeRelease: post.releaseStart - post.arrive,
    release: post.auditStart - post.releaseStart,
    audit: post.auditEnd - post.auditStart,
    brokerAfterAudit: post.respond! - post.auditEnd,
    postBack: p.end - post.respond!,
    open: f.end - p.end,
    runQueueAgent: f.runQueueMs ?? NaN,
    runQueueBroker: (get.runQueueMs ?? NaN) + (post.runQueueMs ?? NaN),
    gcAgent: overlapMs(agentGc, f.start, f.end),
    gcBroker: overlapMs(brokerGc, get.arrive, post.respond),
    datasyncInAudit: overlapMs(datasyncs, post.auditStart, post.auditEnd),
  };
  return r;
}

export async function benchAgentPhasesOpen(): Promise<Record<string, unknown>> {
  const loadAvg1Start = loadavg()[0]!;
  const hosts: EnclaveHost[] = HOSTS > 0 ? await Promise.all(Array.from({ length: HOSTS }, () => startHostChild(true))) : [await inProcessHost(true)];
  const { child, next } = forkPhasesBroker();
  const p = hosts[0]!.pcrs;
  await next('ready');
  if (PIN) {
    for (const h of hosts) pin(h.pid, PIN.enclaves);
    pin(child.pid!, PIN.broker);
  }
  const url = await next<string>('url', { start: { roots: hosts.map((h) => h.rootPem), bind: [{ secret: 'db-password', value: 'bench', pcrs: { 0: p[0]!, 1: p[1]!, 2: p[2]! }, ttlSeconds: 60 }] } });
  const brokerCpu = async (): Promise<number> => {
    const c = await next<NodeJS.CpuUsage>('cpu', 'cpu');
    return c.user + c.system;
  };
  try {
    const brokerKey = (await (await fetch(`${url}/v1/broker-key`)).json()) as JWK;
    const per = Math.ceil(ENCLAVES / hosts.length);
    const counts = hosts.map((_, i) => Math.max(0, Math.min(per, ENCLAVES - i * per)));
    await Promise.all(hosts.map((h, i) => h.setup(url, brokerKey, counts[i]!)));
    // Steady state (bench/steady.ts): every host process warms its own code; CPU per fetch of hosts + broker.
    const warmUp = await warmUntilSteady(
      async (n) => {
        const b0 = await brokerCpu();
        const each = Math.ceil(n / hosts.length);
        const hostUs = (await Promise.all(hosts.map((h) => h.warm(each)))).reduce((a, b) => a + b, 0);
        await next<BrokerPhases>('phases', 'phases');
        return (hostUs + (await brokerCpu()) - b0) / (each * hosts.length);
      },
      { perPass: WARM_PER_PASS },
    );
    const b0 = await brokerCpu();
    const t0 = monoMs() + 50;
    let offset = 0;
    const results = await Promise.all(
      hosts.map((h, i) => {
        const plan = { t0, periodMs: PERIOD_MS, rounds: ROUNDS, total: ENCLAVES, offset };
        offset += counts[i]!;
        return h.open(plan);
      }),
    );
    const brokerUs = (await brokerCpu()) - b0;
    const served = await next<BrokerPhases>('phases', 'phases');
    const join = joiner(served.requests);
    if (process.env.BENCH_PHASES_DEBUG) console.log(JSON.stringify(results[0]!.traces.slice(0, 2)), JSON.stringify(served.requests.slice(0, 4)));
    const rows: Array<Record<Step, number>> = [];
    let unjoined = 0;
    for (const res of results) {
      for (const f of res.traces) {
        const [g, post] = f.calls;
        const row = g && post ? stepsOf(f, join(g.port, g.start, g.end), join(post.port, post.start, post.end), res.gc, served.gc, served.datasyncs) : undefined;
        if (row) rows.push(row);
        else unjoined++;
      }
    }
    const latencies = results.flatMap((r) => r.latencies).sort((a, b) => a - b);
    const seconds = (Math.max(...results.map((r) => r.lastEnd)) - t0) / 1000;
    const hostCpuUs = results.reduce((a, r) => a + r.cpuUs, 0);
    const stats: Record<string, { p50: number; p90: number; p99: number; max: number; mean: number; slowestMean: number }> = {};
    const slowest = [...rows].sort((a, b) => b.total - a.total).slice(0, Math.max(1, Math.ceil(rows.length / 100)));
    for (const step of STEPS) {
      const v = rows.map((r) => r[step]).filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
      const s = slowest.map((r) => r[step]).filter((x) => Number.isFinite(x));
      if (v.length) stats[step] = { p50: pct(v, 0.5), p90: pct(v, 0.9), p99: pct(v, 0.99), max: v.at(-1)!, mean: v.reduce((a, b) => a + b, 0) / v.length, slowestMean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length) };
    }
    const blame: Record<string, number> = {};
    for (const r of slowest) {
      let worst: Step = 'late';
      let excess = -Infinity;
      for (const step of PARTS) {
        const e = r[step] - (stats[step]?.p50 ?? 0);
        if (Number.isFinite(e) && e > excess) [worst, excess] = [step, e];
      }
      blame[worst] = (blame[worst] ?? 0) + 1;
    }
    const shape = `${HOSTS > 0 ? `${HOSTS} enclave host processes` : 'enclaves in the bench process'}${PIN ? `, enclaves on CPU ${PIN.enclaves}, broker on CPU ${PIN.broker}` : ''}`;
    console.log(`\nbench/agent-phases open loop: ${ENCLAVES} enclaves (${shape}), 1 fetch per ${PERIOD_MS} ms each, ${latencies.length} fetches (${rows.length} joined to the broker's requests, ${unjoined} not), steady state after ${warmUp.requests}`);
    console.log(`latency from due p50 / p99 / max (ms): ${pct(latencies, 0.5).toFixed(2)} / ${pct(latencies, 0.99).toFixed(2)} / ${latencies.at(-1)!.toFixed(2)}; ${(latencies.length / seconds).toFixed(0)}/s achieved of ${((ENCLAVES * 1000) / PERIOD_MS).toFixed(0)}/s offered`);
    console.log(`${'step (ms)'.padEnd(20)}${['p50', 'p90', 'p99', 'max', 'mean', 'slowest1%'].map((h) => h.padStart(10)).join('')}`);
    for (const [step, s] of Object.entries(stats)) console.log(`${step.padEnd(20)}${[s.p50, s.p90, s.p99, s.max, s.mean, s.slowestMean].map((x) => x.toFixed(2).padStart(10)).join('')}`);
    console.log(`slowest 1 % (${slowest.length} fetches), step furthest above its median: ${Object.entries(blame).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')}`);
    const gcSum = (g: Array<[number, number]>): string => `${g.length} pauses, ${g.reduce((a, [, d]) => a + d, 0).toFixed(1)} ms, longest ${Math.max(0, ...g.map(([, d]) => d)).toFixed(2)} ms`;
    console.log(`GC: hosts ${gcSum(results.flatMap((r) => r.gc))}; broker ${gcSum(served.gc)}`);
    console.log(`CPU per fetch: enclave hosts ${(hostCpuUs / latencies.length / 1000).toFixed(2)} ms, broker ${(brokerUs / latencies.length / 1000).toFixed(2)} ms; warm-up ${warmUp.cpuUsPerRequestByPass.map((x) => x.toFixed(0)).join(' → ')} µs`);
    console.log(`load average (1 min) at start / end: ${loadAvg1Start.toFixed(2)} / ${loadavg()[0]!.toFixed(2)}`);
    const file = writeResults('agent-phases-open', {
      enclaves: ENCLAVES,
      hosts: HOSTS,
      ...(PIN ? { pinEnclaves: PIN.enclaves, pinBroker: PIN.broker } : {}),
      periodMs: PERIOD_MS,
      fetches: latencies.length,
      joined: rows.length,
      fetchP50Ms: pct(latencies, 0.5),
      fetchP99Ms: pct(latencies, 0.99),
      fetchMaxMs: latencies.at(-1)!,
      achievedPerSec: latencies.length / seconds,
      steps: stats,
      slowestPercentBlame: blame,
      hostCpuMsPerFetch: hostCpuUs / latencies.length / 1000,
      brokerCpuMsPerFetch: brokerUs / latencies.length / 1000,
      warmUpFetches: warmUp.requests,
      loadAvg1Start,
      loadAvg1End: loadavg()[0]!,
    });
    console.log(`wrote ${file}`);
    return { stats };
  } finally {
    child.send('stop');
    await Promise.all(hosts.map((h) => h.stop()));
  }
}
