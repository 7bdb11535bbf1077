/**
 * bench/flood: memory of a broker (its own process) under a flood of unused GET /v1/challenge.
 * After a warm-up, RSS and live heap after GC (--expose-gc in the broker) are sampled every
 * tenth of the run. Goal (issue 15): live heap flat, RSS growth < 64 MB over 500k requests.
 */
import { Agent, request } from 'node:http';
import { printTable, writeResults } from './harness.js';
import { startBrokerChild } from './child.js';

const REQUESTS = Number(process.env.BENCH_FLOOD_REQUESTS ?? 500_000);
const CONCURRENCY = Number(process.env.BENCH_FLOOD_CONCURRENCY ?? 32);
const WARMUP = Math.min(10_000, Math.ceil(REQUESTS / 10));

export async function benchFlood(): Promise<Record<string, unknown>> {
  const broker = await startBrokerChild([], [], { exposeGc: true });
  const url = broker.url;
  const { hostname, port } = new URL(url);
  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = request({ host: hostname, port, path: '/v1/challenge', agent }, (res) => {
        if (res.statusCode !== 200) reject(new Error(`GET /v1/challenge answered ${res.statusCode}`));
        res.resume();
        res.on('end', resolve);
      });
      req.on('error', reject);
      req.end();
    });
  const flood = async (n: number): Promise<void> => {
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => { while (next++ < n) await one(); }));
  };
  try {
    await flood(WARMUP);
    const base = await broker.memory();
    const samples: Array<{ requests: number; rssMb: number; heapMb: number }> = [{ requests: 0, rssMb: base.rss / 1e6, heapMb: base.heapUsed / 1e6 }];
    const step = Math.ceil(REQUESTS / 10);
    const t0 = performance.now();
    for (let done = 0; done < REQUESTS; done += step) {
      await flood(Math.min(step, REQUESTS - done));
      const m = await broker.memory();
      samples.push({ requests: Math.min(done + step, REQUESTS), rssMb: m.rss / 1e6, heapMb: m.heapUsed / 1e6 });
    }
    const seconds = (performance.now() - t0) / 1000;
    const last = samples[samples.length - 1]!;
    const end = await broker.memory();
    const result = {
      requests: REQUESTS,
      concurrency: CONCURRENCY,
      requestsPerSec: REQUESTS / seconds,
      rssGrowthMb: last.rssMb - samples[0]!.rssMb,
      liveHeapGrowthMb: last.heapMb - samples[0]!.heapMb,
      liveHeapMaxMb: Math.max(...samples.map((s) => s.heapMb)),
      rssStartMb: samples[0]!.rssMb,
      rssEndMb: last.rssMb,
      peakRssMb: end.maxRssKb / 1024,
      samples,
    };
    printTable('bench/flood (unused GET /v1/challenge, broker in its own process)', [{ name: 'GET /v1/challenge', ops: REQUESTS, seconds, opsPerSec: REQUESTS / seconds, usPerOp: (seconds * 1e6) / REQUESTS }], {
      'RSS growth (MB, goal < 64)': result.rssGrowthMb.toFixed(1),
      'live heap after GC: start → end (MB)': `${samples[0]!.heapMb.toFixed(1)} → ${last.heapMb.toFixed(1)}`,
      'peak RSS (MB)': result.peakRssMb.toFixed(0),
    });
    console.log(`wrote ${writeResults('flood', result)}`);
    return result;
  } finally {
    agent.destroy();
    await broker.stop();
  }
}
