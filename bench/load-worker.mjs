// Load generator for bench/broker, run in a worker thread so the broker keeps its own core.
// Plain JavaScript on purpose: it needs nothing from the project.
import { parentPort, workerData } from 'node:worker_threads';

// `urls` (several brokers: request i goes to urls[i % n]) or `url` (one broker).
const { url, urls, bodies, concurrency } = workerData;
const targets = urls ?? [url];
const latencies = new Float64Array(bodies.length);
let next = 0;
let failures = 0;
/** Why requests failed: `status code` -> count (a benchmark that fails says why). */
const failureCodes = {};

async function loop() {
  for (;;) {
    const i = next++;
    if (i >= bodies.length) return;
    const t0 = performance.now();
    const res = await fetch(`${targets[i % targets.length]}/v1/secrets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[i] });
    const body = await res.json();
    latencies[i] = performance.now() - t0;
    if (res.status !== 200 || !body.secrets) {
      failures++;
      const why = `${res.status} ${body?.error?.code ?? 'no code'}`;
      failureCodes[why] = (failureCodes[why] ?? 0) + 1;
    }
  }
}

const start = performance.now();
await Promise.all(Array.from({ length: concurrency }, loop));
const seconds = (performance.now() - start) / 1000;
parentPort.postMessage({ seconds, failures, failureCodes, latencies: Array.from(latencies) });
