// Load generator for bench/broker, run in a worker thread so the broker keeps its own core.
// Plain JavaScript on purpose: it needs nothing from the project. node:http with kept-alive
// connections, not fetch: undici's fetch cost the generator ~1.2 ms of CPU per request, nearly a
// whole core at 800 releases/s on a 2-core machine, which left the broker(s) one core between them.
import { Agent, request } from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';

// `urls` (several brokers: request i goes to urls[i % n]) or `url` (one broker).
const { url, urls, bodies, concurrency } = workerData;
const targets = urls ?? [url];
const latencies = new Float64Array(bodies.length);
let next = 0;
let failures = 0;
/** Why requests failed: `status code` -> count (a benchmark that fails says why). */
const failureCodes = {};

const agent = new Agent({ keepAlive: true, maxSockets: concurrency });

/** POST `body` to `base`/v1/secrets: status and parsed JSON answer. */
function post(base, body) {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/v1/secrets`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch (err) {
          reject(err);
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function loop() {
  for (;;) {
    const i = next++;
    if (i >= bodies.length) return;
    const t0 = performance.now();
    const res = await post(targets[i % targets.length], bodies[i]);
    const body = res.body;
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
agent.destroy();
parentPort.postMessage({ seconds, failures, failureCodes, latencies: Array.from(latencies) });
