// Load generator for bench/junk: junk POST /v1/secrets at full speed for a fixed time, from one client.
// Plain JavaScript on purpose: it needs nothing from the project.
import { parentPort, workerData } from 'node:worker_threads';

const { url, bodies, concurrency, seconds } = workerData;
const statuses = {};
let requests = 0;
const end = performance.now() + seconds * 1000;

async function loop() {
  while (performance.now() < end) {
    const res = await fetch(`${url}/v1/secrets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: bodies[requests % bodies.length] });
    await res.arrayBuffer();
    requests++;
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
  }
}

const start = performance.now();
await Promise.all(Array.from({ length: concurrency }, loop));
parentPort.postMessage({ seconds: (performance.now() - start) / 1000, requests, statuses });
