/**
 * bench/workers (`npm run bench -- workers`): releases/s of POST /v1/secrets through a real
 * `keygate broker --workers N` (N = 1, 2; N = 1 is the single process), with fresh documents, the load
 * generator in a worker thread of this process (its CPU reported beside: it shares the cores), and the
 * CPU cost per release: process CPU of every broker process (the primary and its workers, from
 * /proc) divided by the releases, split into user and system time. Beside them, N separate single-process
 * brokers on N ports (`Ns` in BENCH_WORKERS_N): what N busy processes cost on this machine with nothing
 * shared, the floor a cluster of N can reach. Writes `workers: [{ n, mode, releasesPerSecond,
 * cpuUsPerRelease, userUsPerRelease, systemUsPerRelease, primaryUsPerRelease, loadGenCpuPercent, p50Ms,
 * p99Ms, ... }]` into bench/results/broker.json, keeping what else that file holds. BENCH_WORKERS_ROUNDS=1
 * also prints each round's CPU per release and, at the end, each audit chain's records per batch (one
 * seal and one fdatasync each).
 *
 * Steady state (bench/steady.ts): every process has its own JIT, which keeps compiling for thousands of
 * requests; a fixed warm-up spread over N processes leaves each of them half as warm, and the N = 2 row then
 * counts V8's compilation as release cost. So every broker set is warmed in passes of
 * BENCH_WORKERS_PER_PASS requests per serving process (each worker gets its share: connections go round
 * robin) until two passes agree within 3 %; the first pass is reported as the cold figure. CPU is also split
 * per process (primary, worker i, broker i) and, within each, between the main thread and the others (V8's
 * compiler and GC helpers, libuv's pool), from /proc/<pid>/task/<tid>/schedstat, with each process's
 * context switches per release (/proc/<pid>/status).
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createTestPki, type TestPki } from '../test/support/pki.js';
import { TestEnclave } from '../test/support/enclave.js';
import { prepareBrokerDir, spawnBroker } from '../test/support/broker-process.js';
import { printTable, type Measurement } from './harness.js';
import { DEFAULT_WARM_UP, isSteady, threadCpuNs, threadIds } from './steady.js';

const REQUESTS = Number(process.env.BENCH_WORKERS_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_WORKERS_CONCURRENCY ?? 16);
/**
 * What to run: `N` is `keygate broker --workers N`, `Ns` is N separate single-process brokers (the floor for N processes);
 * `@C` after either sets that set's concurrency (default BENCH_WORKERS_CONCURRENCY), e.g. `1,2@32`: the same load per process;
 * a `b` (`2b`) runs that set from BENCH_WORKERS_BASE_BIN (another checkout's bin/keygate.js, built): an A/B interleaved round by round;
 * every set runs with `--verify-threads 0` (all checks on the event loop) unless it has a `t` (`1t`, `1t3`): `--verify-threads T` (signature checks on libuv's thread pool, T at once; default 2), with
 * libuv's default pool (4 threads, enough for T <= 3), or T + 1 threads for a larger T, or BENCH_WORKERS_UV_THREADPOOL_SIZE.
 */
const COUNTS = (process.env.BENCH_WORKERS_N ?? '1,2,2s').split(',').map((c) => {
  const [what, at] = c.split('@') as [string, string | undefined];
  const threads = /t(\d*)/.exec(what);
  const verifyThreads = threads ? Number(threads[1] || 2) : 0;
  return { n: Number.parseInt(what, 10), mode: what.includes('s') ? ('separate' as const) : ('cluster' as const), concurrency: at === undefined ? CONCURRENCY : Number(at), base: what.includes('b'), verifyThreads };
});
/** UV_THREADPOOL_SIZE for the brokers of a `t` set (default: libuv's 4, or T + 1 when T > 3: the least `--verify-threads T` accepts). */
const POOL_SIZE = process.env.BENCH_WORKERS_UV_THREADPOOL_SIZE;
const BASE_BIN = process.env.BENCH_WORKERS_BASE_BIN;
/** BENCH_WORKERS_STRACE=DIR: `strace -c -f` attached to every broker process over the timed rounds, one summary per set in DIR (its CPU figures are then the traced ones: compare syscalls per release only). */
const STRACE_DIR = process.env.BENCH_WORKERS_STRACE;
/** Warm-up requests per pass and per serving process (a worker, or one of the separate brokers): every process has its own JIT to warm. */
const PER_PASS = Number(process.env.BENCH_WORKERS_PER_PASS ?? 500);
/**
 * At least this many passes (so at least PER_PASS × MIN_PASSES requests per process, 3000 by default: bench/broker's
 * broker settles after ~3000). On a shared machine two noisy passes can agree by chance early on, while the JIT is
 * still compiling; a floor keeps a one-process set from being timed half-warm beside a well-warmed cluster.
 */
const MIN_PASSES = Number(process.env.BENCH_WORKERS_MIN_PASSES ?? 6);
/** BENCH_WORKERS_WARM_UP=N: the old fixed warm-up of N requests in total (no steady-state passes), to compare with. */
const FIXED_WARM_UP = process.env.BENCH_WORKERS_WARM_UP === undefined ? undefined : Number(process.env.BENCH_WORKERS_WARM_UP);
/** Documents per timed round: a challenge nonce lives 30 s, so each round is minted right before it is sent. */
const ROUND = 250;
const CLK_TCK = 100; // Linux USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s

export interface ProcessRow {
  /** `primary` (of `--workers N`, N > 1: serves no request), `worker` i of a cluster, or `broker` (a single-process broker: `--workers 1`, or one of the separate ones). */
  readonly role: 'primary' | 'worker' | 'broker';
  readonly index: number;
  /** This process's CPU ÷ all the releases of its set (the rows' processes add up to the set's figure). */
  readonly cpuUsPerRelease: number;
  readonly mainThreadUsPerRelease: number;
  /** V8's compiler and GC helper threads, libuv's pool. */
  readonly otherThreadsUsPerRelease: number;
  readonly voluntaryCtxtSwitchesPerRelease: number;
  readonly nonvoluntaryCtxtSwitchesPerRelease: number;
}

export interface WorkersRow {
  readonly n: number;
  /** Run from BENCH_WORKERS_BASE_BIN (the A/B baseline), not this checkout. */
  readonly base: boolean;
  /** Requests in flight at the load generator (spread over the set's processes). */
  readonly concurrency: number;
  /** `--verify-threads`: signature checks on libuv's thread pool, at most this many at once (0: on the event loop). */
  readonly verifyThreads: number;
  /** UV_THREADPOOL_SIZE the brokers ran with (libuv's default, 4, when not set). */
  readonly threadPoolSize: number;
  /** `cluster`: one `keygate broker --workers N`; `separate`: N single-process brokers on N ports, the load spread over them (what N processes cost on this machine with nothing shared: the floor for the cluster). */
  readonly mode: 'cluster' | 'separate';
  readonly releasesPerSecond: number;
  /** Steady state (after the warm-up passes), every broker process of the set, from /proc/<pid>/stat. */
  readonly cpuUsPerRelease: number;
  readonly userUsPerRelease: number;
  readonly systemUsPerRelease: number;
  /** The primary's own share of cpuUsPerRelease (connection hand-off, nonce and quarantine answers); 0 without one. */
  readonly primaryUsPerRelease: number;
  /** cpuUsPerRelease split by thread over every process of the set (schedstat, ns resolution): main threads, and all the others. */
  readonly mainThreadUsPerRelease: number;
  readonly otherThreadsUsPerRelease: number;
  /** The first warm-up pass (cold JIT): what the old 200-request warm-up measured, roughly. */
  readonly coldCpuUsPerRelease: number;
  readonly warmUpRequests: number;
  readonly warmUpCpuUsPerReleaseByPass: readonly number[];
  readonly processes: readonly ProcessRow[];
  readonly loadGenCpuPercent: number;
  /** Latency of POST /v1/secrets at the load generator, over every timed round. */
  readonly p50Ms: number;
  readonly p99Ms: number;
}

interface Cpu {
  user: number;
  system: number;
}

/** CPU seconds (user, system) of `pid` alone (every thread it ever had). */
function cpuSeconds(pid: number): Cpu {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK }; // utime, stime
  } catch {
    return { user: 0, system: 0 };
  }
}

/** The child processes of `pid` (a primary's workers). */
function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const task of threadIds(pid)) {
    try {
      out.push(...readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return out.sort((a, b) => a - b);
}

/** Voluntary and nonvoluntary context switches of `pid` (all its threads). */
function ctxtSwitches(pid: number): { voluntary: number; nonvoluntary: number } {
  let voluntary = 0;
  let nonvoluntary = 0;
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return { voluntary, nonvoluntary };
  }
  for (const task of tasks) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8');
      voluntary += Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      nonvoluntary += Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    } catch {
      // The thread ended meanwhile.
    }
  }
  return { voluntary, nonvoluntary };
}

interface Proc {
  readonly pid: number;
  readonly role: ProcessRow['role'];
  readonly index: number;
}

interface ProcSample {
  readonly stat: Cpu;
  readonly threads: Map<number, number>;
  readonly switches: { voluntary: number; nonvoluntary: number };
}

/** What a process spent between two samples (summed over rounds). */
interface ProcTotals {
  mainNs: number;
  otherNs: number;
  voluntary: number;
  nonvoluntary: number;
}

function sampleAll(procs: readonly Proc[]): Map<number, ProcSample> {
  return new Map(procs.map((p) => [p.pid, { stat: cpuSeconds(p.pid), threads: threadCpuNs(p.pid), switches: ctxtSwitches(p.pid) }]));
}

/** Adds what each process spent from `before` to `after` into `totals`; returns the set's CPU (schedstat, µs). */
function addDelta(procs: readonly Proc[], before: Map<number, ProcSample>, after: Map<number, ProcSample>, totals: Map<number, ProcTotals>): { cpuUs: number; user: number; system: number; primary: number } {
  let cpuUs = 0;
  let user = 0;
  let system = 0;
  let primary = 0;
  for (const p of procs) {
    const b = before.get(p.pid)!;
    const a = after.get(p.pid)!;
    const t = totals.get(p.pid) ?? { mainNs: 0, otherNs: 0, voluntary: 0, nonvoluntary: 0 };
    for (const [tid, ns] of a.threads) {
      const d = ns - (b.threads.get(tid) ?? 0);
      if (tid === p.pid) t.mainNs += d;
      else t.otherNs += d;
      cpuUs += d / 1e3;
    }
    t.voluntary += a.switches.voluntary - b.switches.voluntary;
    t.nonvoluntary += a.switches.nonvoluntary - b.switches.nonvoluntary;
    totals.set(p.pid, t);
    user += a.stat.user - b.stat.user;
    system += a.stat.system - b.stat.system;
    if (p.role === 'primary') primary += a.stat.user - b.stat.user + (a.stat.system - b.stat.system);
  }
  return { cpuUs, user, system, primary };
}

function runLoad(urls: string[], bodies: string[], concurrency: number): Promise<{ seconds: number; failures: number; failureCodes: Record<string, number>; latencies: number[] }> {
  const worker = new Worker(fileURLToPath(new URL('./load-worker.mjs', import.meta.url)), { workerData: { urls, bodies, concurrency } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

interface Running {
  readonly n: number;
  readonly base: boolean;
  readonly concurrency: number;
  readonly verifyThreads: number;
  readonly threadPoolSize: number;
  readonly mode: WorkersRow['mode'];
  /** The broker processes started (cluster: the primary). */
  readonly pids: number[];
  /** Every process of the set: the primary and its workers, or the single-process brokers. */
  procs: Proc[];
  /** Request i goes to urls[i % urls.length]. */
  readonly urls: string[];
  /** `count` request bodies, body i for urls[i % urls.length] (each broker of `separate` has its own challenge key). */
  mint(count: number): Promise<string[]>;
  stop(): Promise<void>;
  warmUp: { requests: number; byPass: readonly number[] };
  /** Totals over the timed rounds. */
  seconds: number;
  user: number;
  system: number;
  primaryCpu: number;
  loadCpu: number;
  requests: number;
  latencies: number[];
  readonly perProcess: Map<number, ProcTotals>;
}

/** The processes of `b` now: a cluster's primary and workers (worker i = i-th pid by age, as forked), or its brokers. */
function discover(b: Pick<Running, 'n' | 'mode' | 'pids'>): Proc[] {
  if (b.mode === 'separate' || b.n === 1) return b.pids.map((pid, k) => ({ pid, role: 'broker' as const, index: k + 1 }));
  const primary = b.pids[0]!;
  return [{ pid: primary, role: 'primary' as const, index: 0 }, ...childPids(primary).map((pid, k) => ({ pid, role: 'worker' as const, index: k + 1 }))];
}

/** `--workers n` (cluster), or n single-process brokers each in its own directory (separate). */
async function startBrokers(n: number, mode: WorkersRow['mode'], concurrency: number, base: boolean, verifyThreads: number, pki: TestPki): Promise<Running> {
  const poolSize = verifyThreads > 0 ? Number(POOL_SIZE ?? Math.max(4, verifyThreads + 1)) : Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  const started: Array<{ dir: string; child: ChildProcessWithoutNullStreams; url: string; enclave: TestEnclave }> = [];
  for (let k = 0; k < (mode === 'cluster' ? 1 : n); k++) {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-workers-'));
    const config = await prepareBrokerDir(dir, pki); // binds `db`, rate limits and quarantine off
    if (base && !BASE_BIN) throw new Error('a `b` set needs BENCH_WORKERS_BASE_BIN (another checkout\'s bin/keygate.js)');
    // The baseline: spawnBroker runs `node BIN broker ...` behind the wrapper, which swaps BIN for the baseline's (the same pid: exec).
    const wrapper = [...(verifyThreads > 0 && (POOL_SIZE !== undefined || poolSize !== 4) ? ['env', `UV_THREADPOOL_SIZE=${poolSize}`] : []), ...(base ? ['sh', '-c', `shift; exec "$0" '${BASE_BIN}' "$@"`] : [])];
    // A set without `t` checks every signature on the event loop (--verify-threads 0), whatever the broker's default
    // (a baseline checkout older than the flag has no other way).
    const threads = base && verifyThreads === 0 ? [] : ['--verify-threads', String(verifyThreads)];
    const { child, url } = await spawnBroker(config, wrapper, ['--workers', String(mode === 'cluster' ? n : 1), ...threads]);
    started.push({ dir, child, url, enclave: new TestEnclave(pki, url) });
  }
  const body = (d: Uint8Array): string => JSON.stringify({ attestation: Buffer.from(d).toString('base64'), names: ['db'] });
  const pids = started.map((s) => s.child.pid!);
  const running: Running = {
    n,
    base,
    concurrency,
    verifyThreads,
    threadPoolSize: poolSize,
    mode,
    pids,
    procs: discover({ n, mode, pids }),
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
    warmUp: { requests: 0, byPass: [] },
    seconds: 0,
    user: 0,
    system: 0,
    primaryCpu: 0,
    loadCpu: 0,
    requests: 0,
    latencies: [],
    perProcess: new Map(),
  };
  if (running.procs.length !== (mode === 'cluster' && n > 1 ? n + 1 : n)) throw new Error(`${label(running)}: expected ${n} serving processes, found ${JSON.stringify(running.procs)}`);
  return running;
}

/** Sends `count` fresh documents (minted in chunks right before they are sent: nonces live 30 s); the set's CPU µs per request. */
async function load(b: Running, count: number, onRound?: (r: Awaited<ReturnType<typeof runLoad>>, d: ReturnType<typeof addDelta>, ownUs: number) => void): Promise<number> {
  let cpuUs = 0;
  for (let done = 0; done < count; done += ROUND * b.procs.length) {
    const chunk = Math.min(ROUND * b.procs.length, count - done);
    const bodies = await b.mint(chunk);
    const before = sampleAll(b.procs);
    const own0 = process.cpuUsage();
    const result = await runLoad(b.urls, bodies, b.concurrency);
    const own = process.cpuUsage(own0);
    const after = sampleAll(b.procs);
    if (result.failures) throw new Error(`${label(b)}: ${result.failures} requests failed: ${JSON.stringify(result.failureCodes)}`);
    const totals = onRound ? b.perProcess : new Map<number, ProcTotals>();
    const d = addDelta(b.procs, before, after, totals);
    cpuUs += d.cpuUs;
    onRound?.(result, d, own.user + own.system);
  }
  const now = discover(b).map((p) => p.pid);
  if (now.join() !== b.procs.map((p) => p.pid).join()) throw new Error(`${label(b)}: a broker process was replaced (${b.procs.map((p) => p.pid).join()} -> ${now.join()})`);
  return cpuUs / count;
}

/**
 * Warms every set to steady state (bench/steady.ts's rule: passes until two consecutive ones agree within 3 %, at least
 * MIN_PASSES), the sets taking turns pass by pass, and a set already steady keeps taking its turns until every set is: a set
 * warmed and then left idle for minutes while the others warmed had its compiler threads busy again when timing began
 * (~130-200 µs per release on them instead of ~60-90), which then counted as release cost. With BENCH_WORKERS_WARM_UP=N:
 * the old fixed warm-up of N requests in total per set, to compare with.
 */
async function warmAll(sets: readonly Running[]): Promise<void> {
  if (FIXED_WARM_UP !== undefined) {
    for (const b of sets) b.warmUp = { requests: FIXED_WARM_UP, byPass: FIXED_WARM_UP > 0 ? [await load(b, FIXED_WARM_UP)] : [] };
    return;
  }
  const { tolerance, maxPasses } = DEFAULT_WARM_UP;
  const costs = new Map(sets.map((b) => [b, [] as number[]]));
  const steady = (c: readonly number[]): boolean => isSteady(c, { minPasses: MIN_PASSES, tolerance });
  for (let pass = 0; pass < maxPasses && ![...costs.values()].every(steady); pass++) {
    for (const b of sets) costs.get(b)!.push(await load(b, PER_PASS * b.procs.filter((p) => p.role !== 'primary').length));
  }
  for (const b of sets) {
    const byPass = costs.get(b)!;
    b.warmUp = { requests: byPass.length * PER_PASS * b.procs.filter((p) => p.role !== 'primary').length, byPass };
    console.log(`${label(b)}: warm-up ${b.warmUp.requests} requests${steady(byPass) ? '' : ' (NOT steady within the passes allowed)'}, CPU per release by pass (µs): ${byPass.map((c) => c.toFixed(0)).join(' → ')}`);
  }
}

/** `strace -c -f` on every process of `b` until stop() (SIGINT: strace writes its summary on detach). */
function traceSet(b: Running): { stop(): Promise<void> } {
  mkdirSync(STRACE_DIR!, { recursive: true });
  const file = join(STRACE_DIR!, `${label(b).replace(/[^a-z0-9@]+/gi, '-')}.txt`);
  const strace: ChildProcess = spawn('strace', ['-c', '-f', '-o', file, ...b.procs.flatMap((p) => ['-p', String(p.pid)])], { stdio: 'ignore' });
  return {
    stop: async () => {
      const exited = new Promise((r) => strace.once('exit', r));
      strace.kill('SIGINT');
      await exited;
      console.log(`${label(b)}: strace -c -f summary in ${file} (divide the calls by ${b.requests} releases)`);
    },
  };
}

function label(b: { n: number; mode: WorkersRow['mode']; concurrency: number; base: boolean; verifyThreads: number }): string {
  return `${b.mode === 'cluster' ? `--workers ${b.n}` : `${b.n} separate brokers`}${b.verifyThreads ? ` --verify-threads ${b.verifyThreads}` : ''}${b.concurrency === CONCURRENCY ? '' : ` @${b.concurrency}`}${b.base ? ' (baseline)' : ''}`;
}

/** One timed round of `count` fresh documents against `b` (minted first, untimed). */
async function measureRound(b: Running, count: number): Promise<void> {
  await load(b, count, (result, d, ownUs) => {
    b.user += d.user;
    b.system += d.system;
    b.primaryCpu += d.primary;
    b.loadCpu += ownUs / 1e6;
    b.seconds += result.seconds;
    b.requests += result.latencies.length;
    b.latencies.push(...result.latencies);
    if (process.env.BENCH_WORKERS_ROUNDS) console.log(`${label(b)}: round CPU per release ${(d.cpuUs / result.latencies.length).toFixed(0)} µs`);
  });
}

function percentile(values: readonly number[], p: number): number {
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

function rowOf(b: Running): WorkersRow {
  const per = (seconds: number): number => (seconds * 1e6) / b.requests;
  const perNs = (ns: number): number => ns / 1e3 / b.requests;
  const processes: ProcessRow[] = b.procs.map((p) => {
    const t = b.perProcess.get(p.pid) ?? { mainNs: 0, otherNs: 0, voluntary: 0, nonvoluntary: 0 };
    return {
      role: p.role,
      index: p.index,
      cpuUsPerRelease: perNs(t.mainNs + t.otherNs),
      mainThreadUsPerRelease: perNs(t.mainNs),
      otherThreadsUsPerRelease: perNs(t.otherNs),
      voluntaryCtxtSwitchesPerRelease: t.voluntary / b.requests,
      nonvoluntaryCtxtSwitchesPerRelease: t.nonvoluntary / b.requests,
    };
  });
  return {
    n: b.n,
    base: b.base,
    concurrency: b.concurrency,
    verifyThreads: b.verifyThreads,
    threadPoolSize: b.threadPoolSize,
    mode: b.mode,
    releasesPerSecond: b.requests / b.seconds,
    cpuUsPerRelease: per(b.user + b.system),
    userUsPerRelease: per(b.user),
    systemUsPerRelease: per(b.system),
    primaryUsPerRelease: per(b.primaryCpu),
    mainThreadUsPerRelease: processes.reduce((s, p) => s + p.mainThreadUsPerRelease, 0),
    otherThreadsUsPerRelease: processes.reduce((s, p) => s + p.otherThreadsUsPerRelease, 0),
    coldCpuUsPerRelease: b.warmUp.byPass[0] ?? 0,
    warmUpRequests: b.warmUp.requests,
    warmUpCpuUsPerReleaseByPass: b.warmUp.byPass,
    processes,
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
  const workersEnv = {
    node: process.version,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    date: new Date().toISOString(),
    requests: REQUESTS,
    concurrency: CONCURRENCY,
    warmUpPerPassPerProcess: FIXED_WARM_UP === undefined ? PER_PASS : 0,
    warmUpMinPasses: FIXED_WARM_UP === undefined ? MIN_PASSES : 0,
    loadAverage1m: loadavg()[0],
  };
  writeFileSync(RESULTS, `${JSON.stringify({ ...current, workers: rows, workersEnv }, null, 2)}\n`);
  return RESULTS;
}

export async function benchWorkers(): Promise<WorkersRow[]> {
  const pki = await createTestPki(Date.now());
  // Every broker is started and warmed first, then the rounds alternate between them (1, 2, 1, 2, ...): the
  // other work on a shared machine drifts, and alternating lets the drift fall on every N alike.
  const running: Running[] = [];
  try {
    for (const { n, mode, concurrency, base, verifyThreads } of COUNTS) running.push(await startBrokers(n, mode, concurrency, base, verifyThreads, pki));
    await warmAll(running);
    const traces = STRACE_DIR ? running.map((b) => traceSet(b)) : [];
    if (traces.length) await new Promise((r) => setTimeout(r, 2000)); // strace attaches to every thread
    for (let done = 0; done < REQUESTS; done += ROUND) for (const b of running) await measureRound(b, Math.min(ROUND, REQUESTS - done));
    for (const t of traces) await t.stop();
  } finally {
    for (const b of running) await b.stop();
  }
  const rows = running.map(rowOf);
  const table: Measurement[] = rows.map((r) => ({ name: `${label(r)} (${r.concurrency} concurrent)`, ops: REQUESTS, seconds: REQUESTS / r.releasesPerSecond, opsPerSec: r.releasesPerSecond, usPerOp: 1e6 / r.releasesPerSecond }));
  const extra: Record<string, string> = {};
  for (const r of rows) {
    extra[`${label(r)}: broker CPU per release (µs, all broker processes)`] = `${r.cpuUsPerRelease.toFixed(0)} (user ${r.userUsPerRelease.toFixed(0)}, system ${r.systemUsPerRelease.toFixed(0)}${r.primaryUsPerRelease ? `, of which the primary ${r.primaryUsPerRelease.toFixed(0)}` : ''})`;
    extra[`${label(r)}: by thread (µs, main / other threads)`] = `${r.mainThreadUsPerRelease.toFixed(0)} / ${r.otherThreadsUsPerRelease.toFixed(0)}`;
    extra[`${label(r)}: by process (µs: main + other; ctxt switches vol/nonvol per release)`] = r.processes
      .map((p) => `${p.role}${p.role === 'primary' ? '' : ` ${p.index}`} ${p.mainThreadUsPerRelease.toFixed(0)} + ${p.otherThreadsUsPerRelease.toFixed(0)}; ${p.voluntaryCtxtSwitchesPerRelease.toFixed(2)}/${p.nonvoluntaryCtxtSwitchesPerRelease.toFixed(2)}`)
      .join(' | ');
    extra[`${label(r)}: cold (first warm-up pass) CPU per release (µs), warm-up requests`] = `${r.coldCpuUsPerRelease.toFixed(0)}, ${r.warmUpRequests}`;
    extra[`${label(r)}: load generator CPU (% of one core)`] = r.loadGenCpuPercent.toFixed(0);
    extra[`${label(r)}: p50 / p99 latency (ms)`] = `${r.p50Ms.toFixed(1)} / ${r.p99Ms.toFixed(1)}`;
  }
  // Each set against the single process verifying on its event loop at the same concurrency (when that set ran).
  for (const r of rows) {
    const base = rows.find((x) => x.n === 1 && x.mode === 'cluster' && x.concurrency === r.concurrency && !x.base && x.verifyThreads === 0);
    if (!base || base === r) continue;
    const of = `--workers 1${r.concurrency === CONCURRENCY ? '' : ` @${r.concurrency}`}`;
    extra[`${label(r)} ÷ ${of}: releases/s`] = (r.releasesPerSecond / base.releasesPerSecond).toFixed(2);
    extra[`${label(r)} ÷ ${of}: CPU per release`] = (r.cpuUsPerRelease / base.cpuUsPerRelease).toFixed(2);
    extra[`${label(r)} ÷ ${of}: CPU per release, cold`] = (r.coldCpuUsPerRelease / base.coldCpuUsPerRelease).toFixed(2);
  }
  extra['load average (1 min) at the end'] = loadavg()[0]!.toFixed(2);
  printTable(`bench/workers (keygate broker --workers N, real processes, loopback, ${availableParallelism()} cores)`, table, extra);
  console.log(`wrote ${mergeResults(rows)} (workers)`);
  return rows;
}
