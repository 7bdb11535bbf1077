/** A known route asked with the wrong method answers 405 (with Allow), an oversized body 413: a real broker on 127.0.0.1. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';

let dir: string;
let broker: RunningBroker;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-http-methods-'));
  broker = await startTestBroker(join(dir, 'b'), [], { maxBodyBytes: 4096 });
});
afterAll(async () => {
  await broker.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('HTTP methods and body size', () => {
  it('GET /v1/secrets answers 405 METHOD_NOT_ALLOWED with Allow: POST', async () => {
    const res = await fetch(`${broker.url}/v1/secrets`);
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
    expect(await res.json()).toEqual({ error: { code: 'METHOD_NOT_ALLOWED', message: '/v1/secrets accepts POST only' } });
  });

  it('POST /v1/challenge answers 405 with Allow: GET, HEAD; HEAD of a GET route still works; unknown paths stay 404', async () => {
    const res = await fetch(`${broker.url}/v1/challenge`, { method: 'POST' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, HEAD');
    expect((await res.json()) as unknown).toEqual({ error: { code: 'METHOD_NOT_ALLOWED', message: '/v1/challenge accepts GET only' } });
    expect((await fetch(`${broker.url}/healthz`, { method: 'HEAD' })).status).toBe(200);
    expect((await fetch(`${broker.url}/v1/nope`)).status).toBe(404);
  });

  it('a body over maxBodyBytes answers 413 PAYLOAD_TOO_LARGE, with and without content-length', async () => {
    const body = JSON.stringify({ attestation: 'A'.repeat(8192), names: ['db'] });
    const res = await fetch(`${broker.url}/v1/secrets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'body larger than 4096 bytes' } });
    const chunked = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(body));
        controller.close();
      },
    });
    const streamed = await fetch(`${broker.url}/v1/secrets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: chunked, duplex: 'half' } as RequestInit);
    expect(streamed.status).toBe(413);
  });
});
