/** Tiny benchmark helpers: timed loops, a printed table, JSON results. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export interface Measurement {
  name: string;
  ops: number;
  seconds: number;
  opsPerSec: number;
  usPerOp: number;
  /** Process CPU time (user + system) per operation: on a shared machine, unlike wall time, not stretched by waiting for a core. */
  cpuUsPerOp?: number;
}

/** Runs `fn(i)` for `count` iterations (after `warmup`) and reports the rate. */
/** The nearest-rank `q`-quantile (0..1, e.g. 0.99) of ascending `sorted` values: what every bench reports as p50/p99. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

export function measure(name: string, count: number, fn: (i: number) => void, warmup = Math.min(50, count)): Measurement {
  for (let i = 0; i < warmup; i++) fn(i);
  const cpu0 = process.cpuUsage();
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) fn(i);
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return { name, ops: count, seconds, opsPerSec: count / seconds, usPerOp: (seconds * 1e6) / count, cpuUsPerOp: (cpu.user + cpu.system) / count };
}

/** Best of `rounds` runs, to damp noise from the other core's work. */
export function bestOf(rounds: number, run: () => Measurement): Measurement {
  let best: Measurement | undefined;
  for (let r = 0; r < rounds; r++) {
    const m = run();
    if (!best || m.opsPerSec > best.opsPerSec) best = m;
  }
  return best!;
}

export function printTable(title: string, rows: Measurement[], extra: Record<string, string | number> = {}): void {
  console.log(`\n${title}`);
  const width = Math.max(...rows.map((r) => r.name.length), 10);
  console.log(`${'benchmark'.padEnd(width)}  ${'ops/s'.padStart(10)}  ${'µs/op'.padStart(9)}  ${'ops'.padStart(7)}`);
  for (const r of rows) {
    console.log(`${r.name.padEnd(width)}  ${r.opsPerSec.toFixed(0).padStart(10)}  ${r.usPerOp.toFixed(1).padStart(9)}  ${String(r.ops).padStart(7)}`);
  }
  for (const [k, v] of Object.entries(extra)) console.log(`${k}: ${v}`);
}

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results');

/** Writes bench/results/<name>.json with the environment alongside the numbers. */
export function writeResults(name: string, data: Record<string, unknown>): string {
  mkdirSync(RESULTS, { recursive: true });
  const file = join(RESULTS, `${name}.json`);
  const env = { node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, date: new Date().toISOString() };
  writeFileSync(file, `${JSON.stringify({ env, ...data }, null, 2)}\n`);
  return file;
}

/**
 * A full GC now, so that the measurement that follows pays for its own garbage only, not for what earlier rounds
 * left behind (a mark-compact of a previous round's caches landing in a 0.4 s round moved it by ~10 %).
 */
export function collectGarbage(): void {
  setFlagsFromString('--expose-gc');
  (runInNewContext('gc') as () => void)();
}

/** What bench/load-worker.mjs reports after sending every body. */
export interface LoadResult {
  seconds: number;
  failures: number;
  failureCodes: Record<string, number>;
  latencies: number[];
}

/** Sends `bodies` as POST /v1/secrets to `url` from bench/load-worker.mjs in a worker thread, `concurrency` at a time over kept-alive connections. */
export function runLoadWorker(url: string, bodies: string[], concurrency: number): Promise<LoadResult> {
  const worker = new Worker(fileURLToPath(new URL('./load-worker.mjs', import.meta.url)), { workerData: { url, bodies, concurrency } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}
