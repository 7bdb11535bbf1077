/**
 * A flood of unused GET /v1/challenge leaves nothing behind per request (issue 15, goal 7): the broker must not
 * build a full fetch Request (with an abort listener that lives until GC finalises it) for a bodiless GET.
 * Counted structurally (abort listeners registered per request), never timed; the memory figures are bench/flood.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'node:http';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';
import { countAbortListeners } from '../support/abort-listeners.js';

let dir: string;
let broker: RunningBroker;
const agent = new Agent({ keepAlive: true, maxSockets: 4 });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-challenge-flood-'));
  broker = await startTestBroker(dir, []);
});
afterAll(async () => {
  agent.destroy();
  await broker.close();
  rmSync(dir, { recursive: true, force: true });
});

/** One request over node:http (no AbortSignal on the client side), answering status and body. */
function call(method: string, path: string, body?: string): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(broker.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method, agent, headers: body === undefined ? {} : { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('challenge flood', () => {
  it('unused GET /v1/challenge registers no abort listener per request (nothing waits for GC to be freed)', async () => {
    const N = 300;
    const answers: number[] = [];
    const listeners = await countAbortListeners(async () => {
      let next = 0;
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (next++ < N) answers.push((await call('GET', '/v1/challenge')).status);
        }),
      );
    });
    expect(answers).toHaveLength(N);
    expect(answers.every((s) => s === 200)).toBe(true);
    expect(listeners).toBe(0);
  });

  it('HEAD is still served and a POST body over the limit (64 KiB default) is still refused (PAYLOAD_TOO_LARGE)', async () => {
    expect((await call('HEAD', '/v1/challenge')).status).toBe(200);
    const big = JSON.stringify({ attestation: 'A'.repeat(128 * 1024), names: ['x'] });
    const res = await call('POST', '/v1/secrets', big);
    expect(res.status).toBe(413);
    expect((JSON.parse(res.body) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');
  });
});
