/**
 * bench/workers (`npm run bench -- workers`): releases/s of POST /v1/secrets through a real
 * `keygate broker --workers N` (N = 1, 2; N = 1 is the single process), with fresh documents, the load
 * generator in a worker thread of this process (its CPU reported beside: it shares the cores), and the
 * CPU cost per release: process CPU of every broker process (the primary and its workers, from
 * /proc) divided by the releases. Writes `workers: [{ n, releasesPerSecond, cpuUsPerRelease,
 * loadGenCpuPercent }]` into bench/results/broker.json, keeping what else that file holds.
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createTestPki, type TestPki } from '../test/support/pki.js';
import { TestEnclave } from '../test/support/enclave.js';
import { prepareBrokerDir, spawnBroker } from '../test/support/broker-process.js';
import { printTable, type Measurement } from './harness.js';

const REQUESTS = Number(process.env.BENCH_WORKERS_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_WORKERS_CONCURRENCY ?? 16);
const COUNTS = (process.env.BENCH_WORKERS_N ?? '1,2').split(',').map(Number);
/** Documents per timed round: a challenge nonce lives 30 s, so each round is minted right before it is sent. */
const ROUND = 250;
const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s

export interface WorkersRow {
  readonly n: number;
  readonly releasesPerSecond: number;
  readonly cpuUsPerRelease: number;
  readonly loadGenCpuPercent: number;
}

/** CPU seconds (user + system) of `pid` alone. */
function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime
  } catch {
    return 0;
  }
}

/** CPU seconds (user + system) of `pid` and, recursively, its children (the primary's workers). */
function treeCpuSeconds(pid: number): number {
  let total = cpuSeconds(pid);
  if (!existsSync(`/proc/${pid}/task`)) return total;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let children = '';
    try {
      children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    } catch {
      continue;
    }
    for (const child of children.split(/\s+/).filter(Boolean)) total += treeCpuSeconds(Number(child));
  }
  return total;
}

function runLoad(url: string, bodies: string[]): Promise<{ seconds: number; failures: number; failureCodes: Record<string, number> }> {
  const worker = new Worker(fileURLToPath(new URL('./load-worker.mjs', import.meta.url)), { workerData: { url, bodies, concurrency: CONCURRENCY } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

interface Running {
  readonly n: number;
  readonly pid: number;
  readonly url: string;
  mint(count: number): Promise<string[]>;
  stop(): Promise<void>;
  /** Totals over the timed rounds. */
  seconds: number;
  brokerCpu: number;
  primaryCpu: number;
  loadCpu: number;
  requests: number;
}

async function startWorkers(n: number, pki: TestPki): Promise<Running> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-workers-'));
  const config = await prepareBrokerDir(dir, pki); // binds `db`, rate limits and quarantine off
  const { child, url } = await spawnBroker(config, [], ['--workers', String(n)]);
  const enclave = new TestEnclave(pki, url);
  const body = (d: Uint8Array): string => JSON.stringify({ attestation: Buffer.from(d).toString('base64'), names: ['db'] });
  const running: Running = {
    n,
    pid: child.pid!,
    url,
    mint: async (count) => {
      const out: string[] = [];
      for (let i = 0; i < count; i++) out.push(body(enclave.document(await enclave.challenge())));
      return out;
    },
    stop: async () => {
      const exited = new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
      child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
    seconds: 0,
    brokerCpu: 0,
    primaryCpu: 0,
    loadCpu: 0,
    requests: 0,
  };
  const warm = await runLoad(url, await running.mint(200)); // JIT, caches, connections to every worker
  if (warm.failures) throw new Error(`--workers ${n}: warm-up failed: ${JSON.stringify(warm.failureCodes)}`);
  return running;
}

/** One timed round of `count` fresh documents against `b` (minted first, untimed). */
async function measureRound(b: Running, count: number): Promise<void> {
  const bodies = await b.mint(count);
  const broker0 = treeCpuSeconds(b.pid);
  const primary0 = cpuSeconds(b.pid);
  const own0 = process.cpuUsage();
  const load = await runLoad(b.url, bodies);
  const own = process.cpuUsage(own0);
  b.brokerCpu += treeCpuSeconds(b.pid) - broker0;
  b.primaryCpu += cpuSeconds(b.pid) - primary0;
  b.loadCpu += (own.user + own.system) / 1e6;
  b.seconds += load.seconds;
  b.requests += count;
  if (load.failures) throw new Error(`--workers ${b.n}: ${load.failures} requests failed: ${JSON.stringify(load.failureCodes)}`);
}

function rowOf(b: Running): WorkersRow {
  if (b.n > 1) console.log(`--workers ${b.n}: the primary's own CPU per release (µs; connection hand-off, nonce and quarantine answers): ${((b.primaryCpu * 1e6) / b.requests).toFixed(0)}`);
  return { n: b.n, releasesPerSecond: b.requests / b.seconds, cpuUsPerRelease: (b.brokerCpu * 1e6) / b.requests, loadGenCpuPercent: (b.loadCpu / b.seconds) * 100 };
}

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results', 'broker.json');

/** Sets `workers` (and `workersEnv`) in bench/results/broker.json, leaving every other field as it is. */
function mergeResults(rows: WorkersRow[]): string {
  mkdirSync(dirname(RESULTS), { recursive: true });
  const current = existsSync(RESULTS) ? (JSON.parse(readFileSync(RESULTS, 'utf8')) as Record<string, unknown>) : {};
  const workersEnv = { node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: availableParallelism(), date: new Date().toISOString(), requests: REQUESTS, concurrency: CONCURRENCY };
  writeFileSync(RESULTS, `${JSON.stringify({ ...current, workers: rows, workersEnv }, null, 2)}\n`);
  return RESULTS;
}

export async function benchWorkers(): Promise<WorkersRow[]> {
  const pki = await createTestPki(Date.now());
  // Every broker is started first and the rounds alternate between them (1, 2, 1, 2, ...): the other
  // work on a shared machine drifts, and alternating lets the drift fall on every N alike.
  const running: Running[] = [];
  try {
    for (const n of COUNTS) running.push(await startWorkers(n, pki));
    for (let done = 0; done < REQUESTS; done += ROUND) for (const b of running) await measureRound(b, Math.min(ROUND, REQUESTS - done));
  } finally {
    for (const b of running) await b.stop();
  }
  const rows = running.map(rowOf);
  const table: Measurement[] = rows.map((r) => ({ name: `--workers ${r.n} (${CONCURRENCY} concurrent)`, ops: REQUESTS, seconds: REQUESTS / r.releasesPerSecond, opsPerSec: r.releasesPerSecond, usPerOp: 1e6 / r.releasesPerSecond }));
  const extra: Record<string, string> = {};
  for (const r of rows) {
    extra[`--workers ${r.n}: broker CPU per release (µs, all broker processes)`] = r.cpuUsPerRelease.toFixed(0);
    extra[`--workers ${r.n}: load generator CPU (% of one core)`] = r.loadGenCpuPercent.toFixed(0);
  }
  const base = rows.find((r) => r.n === 1);
  for (const r of rows.filter((x) => x.n > 1 && base)) {
    extra[`--workers ${r.n} ÷ --workers 1: releases/s`] = (r.releasesPerSecond / base!.releasesPerSecond).toFixed(2);
    extra[`--workers ${r.n} ÷ --workers 1: CPU per release`] = (r.cpuUsPerRelease / base!.cpuUsPerRelease).toFixed(2);
  }
  printTable(`bench/workers (keygate broker --workers N, real processes, loopback, ${availableParallelism()} cores)`, table, extra);
  console.log(`wrote ${mergeResults(rows)} (workers)`);
  return rows;
}
