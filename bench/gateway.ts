/**
 * bench/gateway: what credential substitution adds to a call. The same small POST to a loopback HTTPS
 * upstream, made directly and through the gateway (agent.fetch: TLS 1.3 to the broker's gateway with a
 * bound connection, token check, store re-check, route/body/budget policy, audited call, TLS to the
 * upstream), and through the agent's local HTTP gateway (what an SDK uses), at 1 and 64 concurrent
 * calls: latency p50/p99, the latency added, and calls per second per core (process CPU time, which here
 * includes the upstream and the client as well as the broker: the direct run's CPU is reported to
 * subtract). Everything shares this process, as on a small host; the audit is the file log (fsync per batch).
 */
import '../test/support/setup.js';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startGatewayFixture } from '../test/support/gateway.js';
import { quantile, writeResults } from './harness.js';

const CALLS_1 = Number(process.env.BENCH_GATEWAY_CALLS_1 ?? 400);
const CALLS_64 = Number(process.env.BENCH_GATEWAY_CALLS_64 ?? 2000);
const BODY = JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'hello' }] });

interface Run {
  readonly path: string;
  readonly concurrency: number;
  readonly calls: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly callsPerSec: number;
  /** Process CPU (user + system) per call, ms. */
  readonly cpuMsPerCall: number;
}

async function run(path: string, concurrency: number, calls: number, one: () => Promise<void>): Promise<Run> {
  // Warm at the run's concurrency: its connections (TLS handshakes, channel bindings), tokens and caches exist before timing.
  for (let round = 0; round < 3; round++) await Promise.all(Array.from({ length: concurrency }, () => one()));
  const latencies: number[] = [];
  let next = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < calls) {
        next++;
        const s = performance.now();
        await one();
        latencies.push(performance.now() - s);
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  return { path, concurrency, calls: latencies.length, p50Ms: quantile(latencies, 0.5), p99Ms: quantile(latencies, 0.99), callsPerSec: latencies.length / seconds, cpuMsPerCall: (cpu.user + cpu.system) / 1000 / latencies.length };
}

function drain(res: import('node:http').IncomingMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    res.on('data', () => undefined);
    res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
    res.on('error', reject);
  });
}

export async function benchGateway(): Promise<Record<string, unknown>> {
  const fx = await startGatewayFixture();
  try {
    await fx.bind('bench', 'sk-bench-real-key');
    const agent = await fx.agent();
    const gw = await agent.gateway();
    const ca = readFileSync(join(fx.dir, 'upstream-ca.pem'), 'utf8');
    const upstreamAgent = new HttpsAgent({ keepAlive: true, maxSockets: 64, ca });
    const localAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });
    const direct = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const req = httpsRequest(new URL('/v1/chat/completions', fx.upstreamOrigin), { method: 'POST', agent: upstreamAgent, headers: { 'content-type': 'application/json', authorization: 'Bearer sk-bench-real-key', 'content-length': Buffer.byteLength(BODY) } }, (res) => drain(res).then(resolve, reject));
        req.on('error', reject);
        req.end(BODY);
      });
    const viaFetch = async (): Promise<void> => {
      const res = await agent.fetch('bench', '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: BODY });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`HTTP ${res.status}`);
    };
    const local = new URL(`${gw.url('bench')}/v1/chat/completions`);
    const viaLocal = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const req = httpRequest(local, { method: 'POST', agent: localAgent, headers: { 'content-type': 'application/json', authorization: `Bearer ${gw.substitute('bench')}`, 'content-length': Buffer.byteLength(BODY) } }, (res) => drain(res).then(resolve, reject));
        req.on('error', reject);
        req.end(BODY);
      });

    const runs: Run[] = [];
    for (const [concurrency, calls] of [[1, CALLS_1], [64, CALLS_64]] as const) {
      runs.push(await run('direct to upstream', concurrency, calls, direct));
      runs.push(await run('gateway, agent.fetch', concurrency, calls, viaFetch));
      runs.push(await run('gateway, local HTTP (SDK path)', concurrency, calls, viaLocal));
    }
    const added = runs
      .filter((r) => r.path !== 'direct to upstream')
      .map((r) => {
        const base = runs.find((d) => d.path === 'direct to upstream' && d.concurrency === r.concurrency)!;
        const gatewayCpuMs = r.cpuMsPerCall - base.cpuMsPerCall;
        return { path: r.path, concurrency: r.concurrency, addedP50Ms: r.p50Ms - base.p50Ms, addedP99Ms: r.p99Ms - base.p99Ms, gatewayCpuMsPerCall: gatewayCpuMs, callsPerSecPerCore: 1000 / r.cpuMsPerCall, gatewayCallsPerSecPerCore: gatewayCpuMs > 0 ? 1000 / gatewayCpuMs : null };
      });

    console.log('\nbench/gateway (loopback; broker, agent, upstream and client in one process)');
    console.log(`${'path'.padEnd(32)} ${'conc'.padStart(4)} ${'calls'.padStart(6)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'calls/s'.padStart(8)} ${'cpu ms/call'.padStart(11)}`);
    for (const r of runs) console.log(`${r.path.padEnd(32)} ${String(r.concurrency).padStart(4)} ${String(r.calls).padStart(6)} ${r.p50Ms.toFixed(2).padStart(8)} ${r.p99Ms.toFixed(2).padStart(8)} ${r.callsPerSec.toFixed(0).padStart(8)} ${r.cpuMsPerCall.toFixed(3).padStart(11)}`);
    console.log(`\n${'added by the gateway'.padEnd(32)} ${'conc'.padStart(4)} ${'+p50 ms'.padStart(8)} ${'+p99 ms'.padStart(8)} ${'calls/s/core (all)'.padStart(19)} ${'(gateway part)'.padStart(15)}`);
    for (const a of added) console.log(`${a.path.padEnd(32)} ${String(a.concurrency).padStart(4)} ${a.addedP50Ms.toFixed(2).padStart(8)} ${a.addedP99Ms.toFixed(2).padStart(8)} ${a.callsPerSecPerCore.toFixed(0).padStart(19)} ${(a.gatewayCallsPerSecPerCore?.toFixed(0) ?? '-').padStart(15)}`);
    const file = writeResults('gateway', { runs, added });
    console.log(`wrote ${file}`);
    upstreamAgent.destroy();
    localAgent.destroy();
    return { runs, added };
  } finally {
    await fx.close();
  }
}
