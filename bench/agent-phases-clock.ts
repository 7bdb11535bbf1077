/**
 * One clock for every process of a benchmark (bench/agent-phases*, bench/agent): CLOCK_MONOTONIC, which
 * process.hrtime reads, is the same clock in every process on the machine, unlike performance.now() (each
 * process's own origin). Times are ms as doubles (µs precision for years of uptime).
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

export function monoMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Add to a performance.now() (or a PerformanceEntry's startTime) to get monoMs. Both clocks are monotonic in Node: a constant. */
export const monoOffsetMs = monoMs() - performance.now();

const schedstat = `/proc/self/task/${process.pid}/schedstat`;
/**
 * How long this process's MAIN thread has waited on a run queue so far (ms): runnable, but no core free. The
 * second field of Linux's schedstat (ns). Undefined where there is no /proc. A growth over an interval is CPU
 * contention suffered in it (by other processes, or this one's own helper threads), not work done.
 */
export function runQueueWaitMs(): number | undefined {
  try {
    return Number(readFileSync(schedstat, 'utf8').split(' ')[1]) / 1e6;
  } catch {
    return undefined;
  }
}

/**
 * Pins every thread of `pid` to the CPUs in `cpus` (taskset list syntax, e.g. "0"); threads it starts later inherit
 * it. For BENCH_*_PIN: a Nitro enclave's vCPUs are taken from the parent instance and dedicated to it, so enclave
 * code never shares a core with the broker; unpinned on this machine, Linux's wake-affine placement (a loopback
 * wake-up puts the woken process on the waker's core) often stacks the two on one core while the other idles.
 */
export function pin(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/** BENCH_*_PIN="ENCLAVE_CPUS/BROKER_CPUS" (e.g. "0/1"), or undefined. */
export function pinning(value: string | undefined): { enclaves: string; broker: string } | undefined {
  const m = value ? /^([\d,-]+)\/([\d,-]+)$/.exec(value) : null;
  return m ? { enclaves: m[1]!, broker: m[2]! } : undefined;
}

/** Milliseconds of `spans` ([start, duration], e.g. GC pauses or fdatasyncs) that overlap [from, to]. */
export function overlapMs(spans: ReadonlyArray<readonly [number, number]>, from: number, to: number): number {
  let ms = 0;
  for (const [start, duration] of spans) ms += Math.max(0, Math.min(to, start + duration) - Math.max(from, start));
  return ms;
}
