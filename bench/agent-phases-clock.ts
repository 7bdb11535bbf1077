/**
 * One clock for every process of a benchmark (bench/agent-phases*, bench/agent): CLOCK_MONOTONIC, which
 * process.hrtime reads, is the same clock in every process on the machine, unlike performance.now() (each
 * process's own origin). Times are ms as doubles (µs precision for years of uptime).
 */
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
