/** The parent side of bench/broker-child.ts: a test broker in its own process, asked over IPC. */
import { fork, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { fileURLToPath } from 'node:url';
import { nextMessage } from './ipc.js';

export interface Binding {
  secret: string;
  value: string;
  /** PCR index -> hex */
  pcrs: Record<number, string>;
  ttlSeconds?: number;
}
export type ChildRequest = { start: { roots: string[]; bind?: Binding[] } } | { profileStop: string } | 'profileStart' | 'cpu' | 'mem' | 'elu' | 'stop';
export interface ChildMemory { rss: number; heapUsed: number; external: number; maxRssKb: number; gc: boolean }

export interface EventLoopUtilization { idle: number; active: number; utilization: number }

/** The share of time the event loop was busy between two snapshots. */
export function eventLoopBusy(before: EventLoopUtilization, after: EventLoopUtilization): number {
  const active = after.active - before.active;
  const total = active + (after.idle - before.idle);
  return total > 0 ? active / total : 0;
}

export interface BrokerChild {
  readonly url: string;
  readonly pid: number;
  /** The broker process's CPU time so far, in microseconds (user + system). */
  cpuUs(): Promise<number>;
  /** The same, split into user and system time (microseconds). */
  cpu(): Promise<NodeJS.CpuUsage>;
  /** performance.eventLoopUtilization() of the broker process (pass two to eventLoopBusy). */
  elu(): Promise<EventLoopUtilization>;
  /** Starts the V8 CPU profiler in the broker process (node:inspector, 200 µs sampling). */
  profileStart(): Promise<boolean>;
  /** Stops it and writes the .cpuprofile to `file` (read it with bench/cpuprofile-top.mjs). */
  profileStop(file: string): Promise<string>;
  /** Memory after two full GCs (when started with `exposeGc`). */
  memory(): Promise<ChildMemory>;
  stop(): Promise<void>;
}

function next<T>(child: ChildProcess, key: string, send?: ChildRequest): Promise<T> {
  return nextMessage(child, key, send, 'bench broker process');
}

export interface BrokerChildOptions {
  exposeGc?: boolean;
  /** Where the server keeps its files (TMPDIR of the child; default: the tmpdir). */
  stateDir?: string;
  /** The child module (default ./broker-child.ts; bench/floor-server.ts answers the same requests). */
  script?: string;
  /** Environment changes for the child (undefined: removed), e.g. BENCH_BROKER_VERIFY_THREADS. */
  env?: Record<string, string | undefined>;
}

/** Starts a test broker (no rate limits) in its own node process, trusting `roots`, with `bind` bound; its files under `stateDir` (default: the tmpdir). */
export async function startBrokerChild(roots: string[], bind: Binding[] = [], options: BrokerChildOptions = {}): Promise<BrokerChild> {
  const env: Record<string, string | undefined> = { ...process.env, ...options.env, ...(options.stateDir ? { TMPDIR: options.stateDir } : {}) };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
  const child = fork(fileURLToPath(new URL(options.script ?? './broker-child.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx', ...(process.env.BENCH_BROKER_NODE_FLAGS ?? '').split(' ').filter(Boolean), ...(options.exposeGc ? ['--expose-gc'] : [])],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    // TMPDIR: where the broker keeps its store, keys and audit log (the audit's fdatasync is on every release).
    env,
  });
  await next(child, 'ready');
  const url = await next<string>(child, 'url', { start: { roots, bind } });
  return {
    url,
    pid: child.pid!,
    cpuUs: async () => {
      const c = await next<NodeJS.CpuUsage>(child, 'cpu', 'cpu');
      return c.user + c.system;
    },
    cpu: () => next<NodeJS.CpuUsage>(child, 'cpu', 'cpu'),
    elu: () => next<EventLoopUtilization>(child, 'elu', 'elu'),
    profileStart: () => next<boolean>(child, 'profiling', 'profileStart'),
    profileStop: (file) => next<string>(child, 'profile', { profileStop: file }),
    memory: () => next<ChildMemory>(child, 'mem', 'mem'),
    stop: async () => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send('stop');
      await exited;
    },
  };
}

/**
 * The child side of the requests above, for any bench server child (bench/broker-child.ts, bench/floor-server.ts):
 * `{ start }` calls `start` and answers `{ url }`; 'cpu', 'elu', 'mem', 'profileStart' / `{ profileStop }` are
 * answered from this process; 'stop' calls `stop` and exits. Announces itself ready.
 */
export function serveBenchRequests(start: (m: { roots: string[]; bind?: Binding[] }) => Promise<string>, stop: () => Promise<void>): void {
  if (!process.send) throw new Error('run by bench/child.ts (needs an IPC channel)');
  const send = process.send.bind(process);
  let profiler: Session | undefined;
  process.on('message', async (m: ChildRequest) => {
    if (typeof m === 'object' && 'start' in m) {
      send({ url: await start(m.start) });
    } else if (m === 'profileStart') {
      profiler ??= new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
      await profiler.post('Profiler.start');
      send({ profiling: true });
    } else if (typeof m === 'object' && 'profileStop' in m) {
      const { profile } = await profiler!.post('Profiler.stop');
      profiler!.disconnect();
      writeFileSync(m.profileStop, JSON.stringify(profile));
      send({ profile: m.profileStop });
    } else if (m === 'elu') {
      const { idle, active, utilization } = performance.eventLoopUtilization();
      send({ elu: { idle, active, utilization } });
    } else if (m === 'cpu') {
      send({ cpu: process.cpuUsage() });
    } else if (m === 'mem') {
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      gc?.();
      const u = process.memoryUsage();
      send({ mem: { rss: u.rss, heapUsed: u.heapUsed, external: u.external, maxRssKb: process.resourceUsage().maxRSS, gc: Boolean(gc) } });
    } else if (m === 'stop') {
      await stop();
      process.exit(0);
    }
  });
  send({ ready: true });
}
