/**
 * Steady state for benchmarks of long-running processes (the broker, its workers, the agent).
 *
 * Why: V8 keeps compiling hot functions (TurboFan, on its own threads) for thousands of requests after a
 * process starts. A run measured after a short warm-up counts that compilation as if every release paid for
 * it: on the 2-core bench machine the broker's CPU per release was ~950 µs after 200 warm-up requests and
 * ~755 µs after 5000, the difference being V8's compiler threads (~140 µs per release) and not-yet-optimised
 * code on the main thread. A broker serves for hours; its cost per release is the steady one. The cold cost is
 * reported beside it (first warm-up pass), so nothing is hidden.
 */
import { readdirSync, readFileSync } from 'node:fs';

export interface WarmUpResult {
  /** Requests spent warming up (all passes). */
  readonly requests: number;
  readonly passes: number;
  /** CPU µs per request of each pass, first to last. */
  readonly cpuUsPerRequestByPass: readonly number[];
}

export interface WarmUpOptions {
  /** Requests per pass (documents are minted right before each pass: nonces live 30 s). */
  readonly perPass: number;
  readonly minPasses: number;
  readonly maxPasses: number;
  /** Stop when a pass costs within this fraction of the one before (and `minPasses` are done). */
  readonly tolerance: number;
}

// At least 6 passes (3000 requests): under load, two early passes can agree by chance while compilation still goes on.
const MIN_PASSES = Number(process.env.BENCH_WARM_UP_MIN_PASSES ?? 6);
export const DEFAULT_WARM_UP: WarmUpOptions = { perPass: 500, minPasses: MIN_PASSES, maxPasses: Math.max(16, MIN_PASSES), tolerance: 0.03 };

/**
 * Runs `pass(requests)` (which returns the CPU µs the measured process(es) spent per request in it) until two
 * consecutive passes agree within `tolerance`, at least `minPasses` and at most `maxPasses` times.
 */
export async function warmUntilSteady(pass: (requests: number) => Promise<number>, options: Partial<WarmUpOptions> = {}): Promise<WarmUpResult> {
  const o = { ...DEFAULT_WARM_UP, ...options };
  const costs: number[] = [];
  while (costs.length < o.maxPasses) {
    costs.push(await pass(o.perPass));
    if (isSteady(costs, o)) break;
  }
  return { requests: costs.length * o.perPass, passes: costs.length, cpuUsPerRequestByPass: costs };
}

/** The steady rule: at least `minPasses` passes, the last two within `tolerance` of each other. */
export function isSteady(costs: readonly number[], o: Pick<WarmUpOptions, 'minPasses' | 'tolerance'> = DEFAULT_WARM_UP): boolean {
  const n = costs.length;
  return n >= Math.max(2, o.minPasses) && Math.abs(costs[n - 1]! - costs[n - 2]!) <= o.tolerance * costs[n - 2]!;
}

/** The thread ids of `pid` (Linux /proc; empty elsewhere or once it has exited). */
export function threadIds(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
}

/** CPU time (ns) each thread of `pid` has used so far, by thread id (Linux /proc; empty elsewhere). */
export function threadCpuNs(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of threadIds(pid)) {
    try {
      // schedstat's first field: nanoseconds on a CPU (finer than stat's 10 ms ticks).
      out.set(Number(tid), Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]));
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/** CPU µs per request on `pid`'s main thread and on all its other threads (V8's compiler and GC helpers, libuv's pool) between two samples. */
export function threadSplit(pid: number, before: Map<number, number>, after: Map<number, number>, requests: number): { mainUs: number; otherUs: number } | undefined {
  if (!after.size) return undefined;
  let main = 0;
  let other = 0;
  for (const [tid, ns] of after) {
    const d = ns - (before.get(tid) ?? 0);
    if (tid === pid) main += d;
    else other += d;
  }
  return { mainUs: main / 1e3 / requests, otherUs: other / 1e3 / requests };
}
