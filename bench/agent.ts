/**
 * bench/agent: the cost of a cached getSecret (ns/op) and of a full
 * re-attesting fetch on loopback (challenge, NSM simulator attestation,
 * broker release, JWE decrypt and JWS check) with p50/p99. Broker, agent and
 * simulator share this process, as they would share a small host.
 */
import '../test/support/setup.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { startTestBroker } from '../test/support/broker.js';
import { bindSecret, pcrSet } from '../broker/admin.js';
import { NsmSimulator } from '../vsock-shim/simulator/nsm-simulator.js';
import { createAgent } from '../enclave-agent/index.js';
import { printTable, writeResults, type Measurement } from './harness.js';

const HITS = Number(process.env.BENCH_AGENT_HITS ?? 2_000_000);
const FETCHES = Number(process.env.BENCH_AGENT_FETCHES ?? 300);

export async function benchAgent(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-agent-'));
  const simulator = await NsmSimulator.create({ warn: () => {} });
  const broker = await startTestBroker(dir, [simulator.rootPem]);
  try {
    const p = simulator.pcrs;
    await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'db-password', value: new TextEncoder().encode('bench'), allow: [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })], provider: 'local', ttlSeconds: 60 });
    const brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
    let now = 0;
    const agent = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: simulator.client(), clock: () => now });

    await agent.getSecret('db-password');
    for (let i = 0; i < 10_000; i++) await agent.getSecret('db-password');
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < HITS; i++) await agent.getSecret('db-password');
    const hitNs = Number(process.hrtime.bigint() - t0) / HITS;

    const latencies: number[] = [];
    for (let i = 0; i < FETCHES + 20; i++) {
      now += 61_000; // past the hard expiry: the next call re-attests
      const s = performance.now();
      await agent.getSecret('db-password');
      if (i >= 20) latencies.push(performance.now() - s);
    }
    latencies.sort((a, b) => a - b);
    const total = latencies.reduce((a, b) => a + b, 0) / 1000;
    const pct = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
    const rows: Measurement[] = [
      { name: 'getSecret, cache hit', ops: HITS, seconds: (hitNs * HITS) / 1e9, opsPerSec: 1e9 / hitNs, usPerOp: hitNs / 1000 },
      { name: 'getSecret, full re-attesting fetch', ops: FETCHES, seconds: total, opsPerSec: FETCHES / total, usPerOp: (total * 1e6) / FETCHES },
    ];
    printTable('bench/agent (loopback, NSM simulator, broker in-process)', rows, {
      'cache hit (ns/op)': hitNs.toFixed(0),
      'fetch p50 (ms)': pct(0.5).toFixed(2),
      'fetch p99 (ms)': pct(0.99).toFixed(2),
    });
    const file = writeResults('agent', { rows, cacheHitNs: hitNs, fetchP50Ms: pct(0.5), fetchP99Ms: pct(0.99), attestations: agent.stats.attestations });
    console.log(`wrote ${file}`);
    await agent.close();
    return { hitNs };
  } finally {
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
