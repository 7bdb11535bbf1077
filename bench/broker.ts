/**
 * bench/broker: releases per second and p50/p99 latency of POST /v1/secrets
 * on loopback with fresh documents (new challenge nonce and signature each,
 * one secret per request, local key provider), beside the verify-only rate
 * of the same documents measured in the same run.
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createVerifier } from '../index.js';
import { startTestBroker } from '../test/support/broker.js';
import { bindSecret, pcrSet } from '../broker/admin.js';
import { createTestPki } from '../test/support/pki.js';
import { APPROVED, TestEnclave } from '../test/support/enclave.js';
import { measure, printTable, writeResults } from './harness.js';

const REQUESTS = Number(process.env.BENCH_BROKER_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_BROKER_CONCURRENCY ?? 16);

function percentile(sorted: Float64Array | number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function runLoad(url: string, bodies: string[]): Promise<{ seconds: number; failures: number; latencies: number[] }> {
  const worker = new Worker(fileURLToPath(new URL('./load-worker.mjs', import.meta.url)), { workerData: { url, bodies, concurrency: CONCURRENCY } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

export async function benchBroker(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-'));
  const pki = await createTestPki(Date.now());
  const broker = await startTestBroker(dir, [pki.root.pem]);
  try {
    await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'db-password', value: new TextEncoder().encode('bench-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
    const enclave = new TestEnclave(pki, broker.url);
    const mint = async (n: number): Promise<Uint8Array[]> => {
      const docs: Uint8Array[] = [];
      // Nonces live 30 s: fetch and mint right before the run that uses them.
      for (let i = 0; i < n; i++) docs.push(enclave.document(await enclave.challenge()));
      return docs;
    };
    const body = (d: Uint8Array): string => JSON.stringify({ attestation: Buffer.from(d).toString('base64'), names: ['db-password'] });

    await runLoad(broker.url, (await mint(200)).map(body)); // warm-up: JIT, caches, connections
    const docs = await mint(REQUESTS);
    const elu0 = performance.eventLoopUtilization();
    const cpu0 = process.cpuUsage();
    const load = await runLoad(broker.url, docs.map(body));
    const elu = performance.eventLoopUtilization(elu0).utilization;
    const cpu = process.cpuUsage(cpu0);
    const cpuCores = (cpu.user + cpu.system) / 1e6 / load.seconds;
    if (load.failures) throw new Error(`${load.failures} requests failed`);
    const sorted = Float64Array.from(load.latencies).sort();
    const releasesPerSec = REQUESTS / load.seconds;

    // Verify-only, same kind of documents (same enclave leaf, fresh nonce and signature), same process.
    const verifier = createVerifier();
    const roots = [pki.root.pem];
    const verifyDocs = await mint(400);
    const verifyOnly = measure('verify only (same documents)', verifyDocs.length, (i) => void verifier(verifyDocs[i]!, { at: Date.now(), roots }), 20);

    const releaseRow = { name: `POST /v1/secrets (${CONCURRENCY} concurrent)`, ops: REQUESTS, seconds: load.seconds, opsPerSec: releasesPerSec, usPerOp: (load.seconds * 1e6) / REQUESTS };
    const summary = {
      'p50 latency (ms)': percentile(sorted, 50).toFixed(2),
      'p99 latency (ms)': percentile(sorted, 99).toFixed(2),
      'releases/s ÷ verify-only docs/s': (releasesPerSec / verifyOnly.opsPerSec).toFixed(3),
      'broker event-loop utilisation': elu.toFixed(2),
      'process CPU (cores, broker + load generator)': cpuCores.toFixed(2),
    };
    printTable('bench/broker (loopback, local provider, one secret per request)', [releaseRow, verifyOnly], summary);
    const file = writeResults('broker', {
      rows: [releaseRow, verifyOnly],
      releasesPerSec,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      verifyOnlyPerSec: verifyOnly.opsPerSec,
      eventLoopUtilisation: elu,
      processCpuCores: cpuCores,
      requests: REQUESTS,
      concurrency: CONCURRENCY,
    });
    console.log(`wrote ${file}`);
    return { releasesPerSec };
  } finally {
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
