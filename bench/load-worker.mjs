// Load generator for bench/broker, run in a worker thread so the broker keeps its own core.
// Plain JavaScript on purpose: it needs nothing from the project.
import { parentPort, workerData } from 'node:worker_threads';

const { url, bodies, concurrency } = workerData;
const latencies = new Float64Array(bodies.length);
let next = 0;
let failures = 0;

async function loop() {
  for (;;) {
    const i = next++;
    if (i >= bodies.length) return;
    const t0 = performance.now();
    const res = await fetch(`${url}/v1/secrets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[i] });
    const body = await res.json();
    latencies[i] = performance.now() - t0;
    if (res.status !== 200 || !body.secrets) failures++;
  }
}

const start = performance.now();
await Promise.all(Array.from({ length: concurrency }, loop));
const seconds = (performance.now() - start) / 1000;
parentPort.postMessage({ seconds, failures, latencies: Array.from(latencies) });
