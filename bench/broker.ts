/**
 * bench/broker: releases per second and p50/p99 latency of POST /v1/secrets on loopback with fresh
 * documents (new challenge nonce and signature each, one secret per request, local key provider),
 * the broker in its OWN process (bench/broker-child.ts) so its CPU time is its own: CPU per release
 * (broker process CPU ÷ releases) beside the CPU of one verify of the same kind of document measured
 * in the same run. cpuRatio = cpuUsPerVerify ÷ cpuUsPerRelease (goal, issue 15: ≥ 0.7).
 * Timing starts once the broker is in steady state (bench/steady.ts: warm-up passes until two agree within 3 %);
 * the first warm-up pass's CPU per release is reported as the cold figure, and the broker's CPU is split between its
 * main thread and its other threads (V8's compiler and GC helpers, libuv's pool) where /proc allows.
 * BENCH_BROKER_CPU_PROFILE=FILE also writes a CPU profile of the broker over the measured requests only, in a
 * second pass (the profiler's own cost stays out of the figures); bench/cpuprofile-top.mjs lists its top entries.
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createVerifier } from '../index.js';
import { createTestPki } from '../test/support/pki.js';
import { APPROVED, TestEnclave } from '../test/support/enclave.js';
import { measure, printTable, quantile, writeResults } from './harness.js';
import { eventLoopBusy, startBrokerChild } from './child.js';
import { threadCpuNs, threadSplit, warmUntilSteady } from './steady.js';

const REQUESTS = Number(process.env.BENCH_BROKER_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_BROKER_CONCURRENCY ?? 16);
const PROFILE_FILE = process.env.BENCH_BROKER_CPU_PROFILE;
/** BENCH_BROKER_PERF=FILE: a `perf record` of the broker process (all its threads, on-CPU samples only) over one more pass of measured requests; run with BENCH_BROKER_NODE_FLAGS=--perf-basic-prof for JavaScript names. */
const PERF_FILE = process.env.BENCH_BROKER_PERF;

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

    // Warm-up (JIT, caches, connections) until the broker's CPU per release stops falling.
    const warmUp = await warmUntilSteady(async (n) => {
      const docs = (await mint(n)).map(body);
      const c0 = await broker.cpu();
      const warm = await runLoad(broker.url, docs);
      if (warm.failures) throw new Error(`${warm.failures} warm-up requests failed: ${JSON.stringify(warm.failureCodes)}`);
      const c1 = await broker.cpu();
      return (c1.user - c0.user + c1.system - c0.system) / n;
    });
    const bodies = (await mint(REQUESTS)).map(body);
    const elu0 = await broker.elu();
    const brokerCpu0 = await broker.cpu();
    const threads0 = threadCpuNs(broker.pid);
    const cpu0 = process.cpuUsage();
    const load = await runLoad(broker.url, bodies);
    const cpu = process.cpuUsage(cpu0);
    const threads = threadSplit(broker.pid, threads0, threadCpuNs(broker.pid), REQUESTS);
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
    // Warmed as long as the broker was (its JS parts reach optimised code too), then timed alone.
    const verifyWarmUp = Math.max(2000, warmUp.requests);
    const verifyOne = (i: number): void => void verifier(verifyDocs[i % verifyDocs.length]!, { at: Date.now(), roots });
    for (let i = 0; i < verifyWarmUp; i++) verifyOne(i);
    const vcpu0 = process.cpuUsage();
    const verifyOnly = measure('verify only (same documents)', REQUESTS, verifyOne, 0);
    const vcpu = process.cpuUsage(vcpu0);
    const cpuUsPerVerify = (vcpu.user + vcpu.system) / REQUESTS;
    const cpuRatio = cpuUsPerVerify / cpuUsPerRelease;

    const releaseRow = { name: `POST /v1/secrets (${CONCURRENCY} concurrent)`, ops: REQUESTS, seconds: load.seconds, opsPerSec: releasesPerSec, usPerOp: (load.seconds * 1e6) / REQUESTS };
    const summary = {
      'CPU per verify ÷ CPU per release (goal ≥ 0.7)': cpuRatio.toFixed(3),
      'broker CPU per release (µs)': `${cpuUsPerRelease.toFixed(0)} (user ${(brokerUserUs / REQUESTS).toFixed(0)}, system ${(brokerSystemUs / REQUESTS).toFixed(0)})`,
      'CPU per verify (µs)': cpuUsPerVerify.toFixed(0),
      'broker CPU per release by thread (µs)': threads ? `main ${threads.mainUs.toFixed(0)}, others ${threads.otherUs.toFixed(0)}` : 'n/a (no /proc)',
      'warm-up (requests, CPU per release by pass in µs)': `${warmUp.requests}: ${warmUp.cpuUsPerRequestByPass.map((c) => c.toFixed(0)).join(' → ')}`,
      'p50 latency (ms)': quantile(sorted, 0.5).toFixed(2),
      'p99 latency (ms)': quantile(sorted, 0.99).toFixed(2),
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
      mainThreadUsPerRelease: threads?.mainUs ?? null,
      otherThreadsUsPerRelease: threads?.otherUs ?? null,
      coldCpuUsPerRelease: warmUp.cpuUsPerRequestByPass[0],
      warmUpRequests: warmUp.requests,
      releasesPerSec,
      p50Ms: quantile(sorted, 0.5),
      p99Ms: quantile(sorted, 0.99),
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
    if (PERF_FILE) {
      const profiled = (await mint(REQUESTS)).map(body);
      const perf = spawn('perf', ['record', '-F', '4999', '-g', '-p', String(broker.pid), '-o', PERF_FILE], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 500)); // perf attaches
      await runLoad(broker.url, profiled);
      const done = new Promise((r) => perf.once('exit', r));
      perf.kill('SIGINT');
      await done;
      console.log(`wrote ${PERF_FILE} (perf record of ${REQUESTS} releases)`);
    }
    return { releasesPerSec, cpuRatio };
  } finally {
    await broker.stop();
  }
}
