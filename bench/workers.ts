/**
 * bench/workers (`npm run bench -- workers`): releases/s of POST /v1/secrets through a real
 * `keygate broker --workers N` (N = 1, 2; N = 1 is the single process), with fresh documents, the load
 * generator in a worker thread of this process (its CPU reported beside: it shares the cores), and the
 * CPU cost per release: process CPU of every broker process (the primary and its workers, from
 * /proc) divided by the releases, split into user and system time. Beside them, N separate single-process
 * brokers on N ports (`Ns` in BENCH_WORKERS_N): what N busy processes cost on this machine with nothing
 * shared, the floor a cluster of N can reach. Writes `workers: [{ n, mode, releasesPerSecond,
 * cpuUsPerRelease, userUsPerRelease, systemUsPerRelease, primaryUsPerRelease, loadGenCpuPercent, p50Ms,
 * p99Ms }]` into bench/results/broker.json, keeping what else that file holds. BENCH_WORKERS_ROUNDS=1
 * also prints each round's CPU per release and, at the end, each audit chain's records per batch (one
 * seal and one fdatasync each).
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createTestPki, type TestPki } from '../test/support/pki.js';
import { TestEnclave } from '../test/support/enclave.js';
import { prepareBrokerDir, spawnBroker } from '../test/support/broker-process.js';
import { printTable, type Measurement } from './harness.js';

const REQUESTS = Number(process.env.BENCH_WORKERS_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_WORKERS_CONCURRENCY ?? 16);
/** What to run: `N` is `keygate broker --workers N`, `Ns` is N separate single-process brokers (the floor for N processes). */
const COUNTS = (process.env.BENCH_WORKERS_N ?? '1,2,2s').split(',').map((c) => ({ n: Number.parseInt(c, 10), mode: c.endsWith('s') ? ('separate' as const) : ('cluster' as const) }));
/** Releases per broker before timing starts (JIT, caches, connections): every process has its own JIT to warm. */
const WARM_UP = Number(process.env.BENCH_WORKERS_WARM_UP ?? 200);
/** Documents per timed round: a challenge nonce lives 30 s, so each round is minted right before it is sent. */
const ROUND = 250;
const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s

export interface WorkersRow {
  readonly n: number;
  /** `cluster`: one `keygate broker --workers N`; `separate`: N single-process brokers on N ports, the load spread over them (what N processes cost on this machine with nothing shared: the floor for the cluster). */
  readonly mode: 'cluster' | 'separate';
  readonly releasesPerSecond: number;
  readonly cpuUsPerRelease: number;
  readonly userUsPerRelease: number;
  readonly systemUsPerRelease: number;
  /** The primary's own share of cpuUsPerRelease (connection hand-off, nonce and quarantine answers); 0 without one. */
  readonly primaryUsPerRelease: number;
  readonly loadGenCpuPercent: number;
  /** Latency of POST /v1/secrets at the load generator, over every timed round. */
  readonly p50Ms: number;
  readonly p99Ms: number;
}

interface Cpu {
  user: number;
  system: number;
}

/** CPU seconds (user, system) of `pid` alone. */
function cpuSeconds(pid: number): Cpu {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK }; // utime, stime
  } catch {
    return { user: 0, system: 0 };
  }
}

/** CPU seconds (user, system) of `pid` and, recursively, its children (the primary's workers). */
function treeCpuSeconds(pid: number): Cpu {
  const total = cpuSeconds(pid);
  if (!existsSync(`/proc/${pid}/task`)) return total;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    let children = '';
    try {
      children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    } catch {
      continue;
    }
    for (const child of children.split(/\s+/).filter(Boolean)) {
      const c = treeCpuSeconds(Number(child));
      total.user += c.user;
      total.system += c.system;
    }
  }
  return total;
}

/** The CPU of every broker process of `b`, and of the primary alone. */
function brokerCpu(b: Running): { all: Cpu; primary: number } {
  const all: Cpu = { user: 0, system: 0 };
  for (const pid of b.pids) {
    const c = treeCpuSeconds(pid);
    all.user += c.user;
    all.system += c.system;
  }
  const p = b.mode === 'cluster' && b.n > 1 ? cpuSeconds(b.pids[0]!) : { user: 0, system: 0 };
  return { all, primary: p.user + p.system };
}

function runLoad(urls: string[], bodies: string[]): Promise<{ seconds: number; failures: number; failureCodes: Record<string, number>; latencies: number[] }> {
  const worker = new Worker(fileURLToPath(new URL('./load-worker.mjs', import.meta.url)), { workerData: { urls, bodies, concurrency: CONCURRENCY } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

interface Running {
  readonly n: number;
  readonly mode: WorkersRow['mode'];
  /** The broker processes started (cluster: the primary). */
  readonly pids: number[];
  /** Request i goes to urls[i % urls.length]. */
  readonly urls: string[];
  /** `count` request bodies, body i for urls[i % urls.length] (each broker of `separate` has its own challenge key). */
  mint(count: number): Promise<string[]>;
  stop(): Promise<void>;
  /** Totals over the timed rounds. */
  seconds: number;
  user: number;
  system: number;
  primaryCpu: number;
  loadCpu: number;
  requests: number;
  latencies: number[];
}

/** `--workers n` (cluster), or n single-process brokers each in its own directory (separate). */
async function startBrokers(n: number, mode: WorkersRow['mode'], pki: TestPki): Promise<Running> {
  const started: Array<{ dir: string; child: ChildProcessWithoutNullStreams; url: string; enclave: TestEnclave }> = [];
  for (let k = 0; k < (mode === 'cluster' ? 1 : n); k++) {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-workers-'));
    const config = await prepareBrokerDir(dir, pki); // binds `db`, rate limits and quarantine off
    const { child, url } = await spawnBroker(config, [], ['--workers', String(mode === 'cluster' ? n : 1)]);
    started.push({ dir, child, url, enclave: new TestEnclave(pki, url) });
  }
  const body = (d: Uint8Array): string => JSON.stringify({ attestation: Buffer.from(d).toString('base64'), names: ['db'] });
  const running: Running = {
    n,
    mode,
    pids: started.map((s) => s.child.pid!),
    urls: started.map((s) => s.url),
    mint: async (count) => {
      const out: string[] = [];
      for (let i = 0; i < count; i++) {
        const { enclave } = started[i % started.length]!;
        out.push(body(enclave.document(await enclave.challenge())));
      }
      return out;
    },
    stop: async () => {
      for (const { child, dir } of started) {
        const exited = new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
        child.kill('SIGTERM');
        await exited;
        if (process.env.BENCH_WORKERS_ROUNDS) {
          for (const f of readdirSync(join(dir, 'state')).filter((x) => x.endsWith('.jsonl'))) {
            const lines = readFileSync(join(dir, 'state', f), 'utf8').split('\n').filter(Boolean);
            const seals = lines.filter((l) => l.includes('"type":"seal"')).length;
            console.log(`${label(running)} ${f}: ${lines.length - seals} records in ${seals} batches`);
          }
        }
        rmSync(dir, { recursive: true, force: true });
      }
    },
    seconds: 0,
    user: 0,
    system: 0,
    primaryCpu: 0,
    loadCpu: 0,
    requests: 0,
    latencies: [],
  };
  const warm = await runLoad(running.urls, await running.mint(WARM_UP)); // JIT, caches, connections to every worker
  if (warm.failures) throw new Error(`${label(running)}: warm-up failed: ${JSON.stringify(warm.failureCodes)}`);
  return running;
}

function label(b: { n: number; mode: WorkersRow['mode'] }): string {
  return b.mode === 'cluster' ? `--workers ${b.n}` : `${b.n} separate brokers`;
}

/** One timed round of `count` fresh documents against `b` (minted first, untimed). */
async function measureRound(b: Running, count: number): Promise<void> {
  const bodies = await b.mint(count);
  const cpu0 = brokerCpu(b);
  const own0 = process.cpuUsage();
  const load = await runLoad(b.urls, bodies);
  const own = process.cpuUsage(own0);
  const cpu = brokerCpu(b);
  b.user += cpu.all.user - cpu0.all.user;
  b.system += cpu.all.system - cpu0.all.system;
  b.primaryCpu += cpu.primary - cpu0.primary;
  b.loadCpu += (own.user + own.system) / 1e6;
  b.seconds += load.seconds;
  b.requests += count;
  b.latencies.push(...load.latencies);
  if (process.env.BENCH_WORKERS_ROUNDS) console.log(`${label(b)}: round CPU per release ${((((cpu.all.user - cpu0.all.user) + (cpu.all.system - cpu0.all.system)) * 1e6) / count).toFixed(0)} µs`);
  if (load.failures) throw new Error(`${label(b)}: ${load.failures} requests failed: ${JSON.stringify(load.failureCodes)}`);
}

function percentile(values: readonly number[], p: number): number {
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

function rowOf(b: Running): WorkersRow {
  const per = (seconds: number): number => (seconds * 1e6) / b.requests;
  return {
    n: b.n,
    mode: b.mode,
    releasesPerSecond: b.requests / b.seconds,
    cpuUsPerRelease: per(b.user + b.system),
    userUsPerRelease: per(b.user),
    systemUsPerRelease: per(b.system),
    primaryUsPerRelease: per(b.primaryCpu),
    loadGenCpuPercent: (b.loadCpu / b.seconds) * 100,
    p50Ms: percentile(b.latencies, 50),
    p99Ms: percentile(b.latencies, 99),
  };
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
    for (const { n, mode } of COUNTS) running.push(await startBrokers(n, mode, pki));
    for (let done = 0; done < REQUESTS; done += ROUND) for (const b of running) await measureRound(b, Math.min(ROUND, REQUESTS - done));
  } finally {
    for (const b of running) await b.stop();
  }
  const rows = running.map(rowOf);
  const table: Measurement[] = rows.map((r) => ({ name: `${label(r)} (${CONCURRENCY} concurrent)`, ops: REQUESTS, seconds: REQUESTS / r.releasesPerSecond, opsPerSec: r.releasesPerSecond, usPerOp: 1e6 / r.releasesPerSecond }));
  const extra: Record<string, string> = {};
  for (const r of rows) {
    extra[`${label(r)}: broker CPU per release (µs, all broker processes)`] = `${r.cpuUsPerRelease.toFixed(0)} (user ${r.userUsPerRelease.toFixed(0)}, system ${r.systemUsPerRelease.toFixed(0)}${r.primaryUsPerRelease ? `, of which the primary ${r.primaryUsPerRelease.toFixed(0)}` : ''})`;
    extra[`${label(r)}: load generator CPU (% of one core)`] = r.loadGenCpuPercent.toFixed(0);
    extra[`${label(r)}: p50 / p99 latency (ms)`] = `${r.p50Ms.toFixed(1)} / ${r.p99Ms.toFixed(1)}`;
  }
  const base = rows.find((r) => r.n === 1 && r.mode === 'cluster');
  for (const r of rows.filter((x) => x !== base && base)) {
    extra[`${label(r)} ÷ --workers 1: releases/s`] = (r.releasesPerSecond / base!.releasesPerSecond).toFixed(2);
    extra[`${label(r)} ÷ --workers 1: CPU per release`] = (r.cpuUsPerRelease / base!.cpuUsPerRelease).toFixed(2);
  }
  printTable(`bench/workers (keygate broker --workers N, real processes, loopback, ${availableParallelism()} cores)`, table, extra);
  console.log(`wrote ${mergeResults(rows)} (workers)`);
  return rows;
}
