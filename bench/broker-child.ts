/**
 * A test broker in its own process for the benchmarks that must not share a core or an event loop
 * with their load generator (flood, agent, broker CPU per release). Driven over IPC by bench/child.ts:
 * `{ start: { roots, bind? } }` answers `{ url }`; 'cpu' answers process.cpuUsage(); 'elu' the event-loop
 * utilisation so far; 'profileStart' / `{ profileStop: FILE }` a CPU profile; 'mem' collects
 * garbage (run with --expose-gc) and answers the memory figures; 'stop' closes and exits.
 * BENCH_BROKER_VERIFY_THREADS=N in the environment starts the broker with verifyThreads N (unset: the broker's default).
 */
import '../test/support/setup.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestBroker } from '../test/support/broker.js';
import { bindSecret, pcrSet } from '../broker/admin.js';
import type { RunningBroker } from '../broker/broker.js';
import type { ChildRequest } from './child.js';

if (!process.send) throw new Error('run by bench/child.ts (needs an IPC channel)');
const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-child-'));
let broker: RunningBroker | undefined;
let profiler: Session | undefined;

process.on('message', async (m: ChildRequest) => {
  if (typeof m === 'object' && 'start' in m) {
    // BENCH_BROKER_VERIFY_THREADS=N: the broker's verifyThreads (signature checks on libuv's pool; 0: on the event
    // loop), to compare with the default (unset: the broker's default, the cores - 1).
    const threads = process.env.BENCH_BROKER_VERIFY_THREADS;
    broker = await startTestBroker(dir, m.start.roots, threads === undefined ? {} : { verifyThreads: Number(threads) });
    for (const b of m.start.bind ?? []) {
      await bindSecret(broker.store, broker.providers.get('local')!, { secret: b.secret, value: new TextEncoder().encode(b.value), allow: [pcrSet(b.pcrs)], provider: 'local', ...(b.ttlSeconds ? { ttlSeconds: b.ttlSeconds } : {}) });
    }
    process.send!({ url: broker.url });
  } else if (m === 'profileStart') {
    profiler ??= new Session();
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
    await profiler.post('Profiler.start');
    process.send!({ profiling: true });
  } else if (typeof m === 'object' && 'profileStop' in m) {
    const { profile } = await profiler!.post('Profiler.stop');
    profiler!.disconnect();
    writeFileSync(m.profileStop, JSON.stringify(profile));
    process.send!({ profile: m.profileStop });
  } else if (m === 'elu') {
    const { idle, active, utilization } = performance.eventLoopUtilization();
    process.send!({ elu: { idle, active, utilization } });
  } else if (m === 'cpu') {
    process.send!({ cpu: process.cpuUsage() });
  } else if (m === 'mem') {
    const gc = (globalThis as { gc?: () => void }).gc;
    gc?.();
    gc?.();
    const u = process.memoryUsage();
    process.send!({ mem: { rss: u.rss, heapUsed: u.heapUsed, external: u.external, maxRssKb: process.resourceUsage().maxRSS, gc: Boolean(gc) } });
  } else if (m === 'stop') {
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }
});
process.send({ ready: true });
