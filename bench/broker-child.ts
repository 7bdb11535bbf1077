/**
 * A test broker in its own process for the benchmarks that must not share a core or an event loop
 * with their load generator (flood, agent, broker CPU per release). Driven over IPC by bench/child.ts:
 * `{ start: { roots, bind? } }` answers `{ url }`; 'cpu' answers process.cpuUsage(); 'elu' the event-loop
 * utilisation so far; 'profileStart' / `{ profileStop: FILE }` a CPU profile; 'mem' collects
 * garbage (run with --expose-gc) and answers the memory figures; 'stop' closes and exits.
 * BENCH_BROKER_VERIFY_THREADS=N in the environment starts the broker with verifyThreads N (unset: the broker's default).
 */
import '../test/support/setup.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestBroker } from '../test/support/broker.js';
import { bindSecret, pcrSet } from '../broker/admin.js';
import type { RunningBroker } from '../broker/broker.js';
import { serveBenchRequests } from './child.js';

const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-child-'));
let broker: RunningBroker | undefined;

serveBenchRequests(
  async (start) => {
    // BENCH_BROKER_VERIFY_THREADS=N: the broker's verifyThreads (signature checks on libuv's pool; 0: on the event
    // loop), to compare with the default (unset: the broker's default, the cores - 1).
    const threads = process.env.BENCH_BROKER_VERIFY_THREADS;
    broker = await startTestBroker(dir, start.roots, threads === undefined ? {} : { verifyThreads: Number(threads) });
    for (const b of start.bind ?? []) {
      await bindSecret(broker.store, broker.providers.get('local')!, { secret: b.secret, value: new TextEncoder().encode(b.value), allow: [pcrSet(b.pcrs)], provider: 'local', ...(b.ttlSeconds ? { ttlSeconds: b.ttlSeconds } : {}) });
    }
    return broker.url;
  },
  async () => {
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  },
);
