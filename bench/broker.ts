/**
 * bench/broker: releases per second and p50/p99 latency of POST /v1/secrets on loopback with fresh
 * documents (new challenge nonce and signature each, one secret per request, local key provider),
 * the broker in its OWN process (bench/broker-child.ts) so its CPU time is its own: CPU per release
 * (broker process CPU ÷ releases) beside the CPU of one verify of the same kind of document measured
 * in the same run. cpuRatio = cpuUsPerVerify ÷ cpuUsPerRelease (goal, issue 15: ≥ 0.7).
 * BENCH_BROKER_CPU_PROFILE=FILE also writes a CPU profile of the broker over the measured requests only, in a
 * second pass (the profiler's own cost stays out of the figures); bench/cpuprofile-top.mjs lists its top entries.
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { createVerifier } from '../index.js';
import { createTestPki } from '../test/support/pki.js';
import { APPROVED, TestEnclave } from '../test/support/enclave.js';
import { measure, printTable, writeResults } from './harness.js';
import { eventLoopBusy, startBrokerChild } from './child.js';

const REQUESTS = Number(process.env.BENCH_BROKER_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_BROKER_CONCURRENCY ?? 16);
const PROFILE_FILE = process.env.BENCH_BROKER_CPU_PROFILE;

function percentile(sorted: Float64Array | number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function runLoad(url: string, bodies: string[]): Promise<{ seconds: number; failures: number; failureCodes: Record<string, number>; latencies: number[] }> {
  const worker = new Worker(fileURLToPath(new URL('./load-worker.mjs', import.meta.url)), { workerData: { url, bodies, concurrency: CONCURRENCY } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

export async function benchBroker(): Promise<Record<string, unknown>> {
  const pki = await createTestPki(Date.now());
  const broker = await startBrokerChild([pki.root.pem], [{ secret: 'db-password', value: 'bench-value', pcrs: APPROVED }]);
  try {
    const enclave = new TestEnclave(pki, broker.url);
    const mint = async (n: number): Promise<Uint8Array[]> => {
      const docs: Uint8Array[] = [];
      // Nonces live 30 s: fetch and mint right before the run that uses them.
      for (let i = 0; i < n; i++) docs.push(enclave.document(await enclave.challenge()));
      return docs;
    };
    const body = (d: Uint8Array): string => JSON.stringify({ attestation: Buffer.from(d).toString('base64'), names: ['db-password'] });

    await runLoad(broker.url, (await mint(200)).map(body)); // warm-up: JIT, caches, connections
    const bodies = (await mint(REQUESTS)).map(body);
    const elu0 = await broker.elu();
    const brokerCpu0 = await broker.cpu();
    const cpu0 = process.cpuUsage();
    const load = await runLoad(broker.url, bodies);
    const cpu = process.cpuUsage(cpu0);
    const brokerCpu = await broker.cpu();
    const brokerUserUs = brokerCpu.user - brokerCpu0.user;
    const brokerSystemUs = brokerCpu.system - brokerCpu0.system;
    const brokerCpuUs = brokerUserUs + brokerSystemUs;
    const elu = eventLoopBusy(elu0, await broker.elu());
    if (load.failures) throw new Error(`${load.failures} requests failed: ${JSON.stringify(load.failureCodes)}`);
    const sorted = Float64Array.from(load.latencies).sort();
    const releasesPerSec = REQUESTS / load.seconds;
    // The 'cpu' and 'elu' questions themselves cost the broker a few microseconds: noise against ~REQUESTS ms.
    const cpuUsPerRelease = brokerCpuUs / REQUESTS;

    // Verify-only, same kind of documents (same enclave leaf, fresh nonce and signature), in this process now that
    // the load generator is done: wall rate, and CPU per verify for the ratio.
    const verifier = createVerifier();
    const roots = [pki.root.pem];
    const verifyDocs = await mint(400);
    const vcpu0 = process.cpuUsage();
    const verifyOnly = measure('verify only (same documents)', verifyDocs.length, (i) => void verifier(verifyDocs[i]!, { at: Date.now(), roots }), 20);
    const vcpu = process.cpuUsage(vcpu0);
    const cpuUsPerVerify = (vcpu.user + vcpu.system) / (verifyDocs.length + 20);
    const cpuRatio = cpuUsPerVerify / cpuUsPerRelease;

    const releaseRow = { name: `POST /v1/secrets (${CONCURRENCY} concurrent)`, ops: REQUESTS, seconds: load.seconds, opsPerSec: releasesPerSec, usPerOp: (load.seconds * 1e6) / REQUESTS };
    const summary = {
      'CPU per verify ÷ CPU per release (goal ≥ 0.7)': cpuRatio.toFixed(3),
      'broker CPU per release (µs)': `${cpuUsPerRelease.toFixed(0)} (user ${(brokerUserUs / REQUESTS).toFixed(0)}, system ${(brokerSystemUs / REQUESTS).toFixed(0)})`,
      'CPU per verify (µs)': cpuUsPerVerify.toFixed(0),
      'p50 latency (ms)': percentile(sorted, 50).toFixed(2),
      'p99 latency (ms)': percentile(sorted, 99).toFixed(2),
      'releases/s ÷ verify-only docs/s': (releasesPerSec / verifyOnly.opsPerSec).toFixed(3),
      'broker event-loop utilisation': elu.toFixed(2),
      'broker process CPU (cores)': (brokerCpuUs / 1e6 / load.seconds).toFixed(2),
      'load generator process CPU (cores)': ((cpu.user + cpu.system) / 1e6 / load.seconds).toFixed(2),
    };
    printTable('bench/broker (loopback, broker in its own process, local provider, one secret per request)', [releaseRow, verifyOnly], summary);
    const file = writeResults('broker', {
      rows: [releaseRow, verifyOnly],
      cpuRatio,
      cpuUsPerRelease,
      cpuUsPerVerify,
      userUsPerRelease: brokerUserUs / REQUESTS,
      systemUsPerRelease: brokerSystemUs / REQUESTS,
      releasesPerSec,
      p50Ms: percentile(sorted, 50),
      p99Ms: percentile(sorted, 99),
      verifyOnlyPerSec: verifyOnly.opsPerSec,
      eventLoopUtilisation: elu,
      brokerProcessCpuCores: brokerCpuUs / 1e6 / load.seconds,
      loadGeneratorCpuCores: (cpu.user + cpu.system) / 1e6 / load.seconds,
      requests: REQUESTS,
      concurrency: CONCURRENCY,
    });
    console.log(`wrote ${file}`);
    if (PROFILE_FILE) {
      const profiled = (await mint(REQUESTS)).map(body);
      await broker.profileStart();
      await runLoad(broker.url, profiled);
      console.log(`wrote ${await broker.profileStop(PROFILE_FILE)} (profile of ${REQUESTS} releases)`);
    }
    return { releasesPerSec, cpuRatio };
  } finally {
    await broker.stop();
  }
}
