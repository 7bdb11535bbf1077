/**
 * POST bodies are read straight from node's request (issue 15, goal 1: no fetch Request, web stream or
 * AbortSignal per request), with the same byte limit and answers as before: a declared Content-Length
 * over the limit is refused up front, a chunked body as soon as it passes the limit, exactly the
 * declared bytes are the body, and a client that goes away mid-body leaves nothing waiting. Real
 * sockets on 127.0.0.1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { Agent, request } from 'node:http';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig, type BrokerConfig } from '../../broker/config.js';
import type { Logger } from '../../broker/log.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { createBrokerApp, type BrokerAppDependencies } from '../../broker/server.js';
import { BrokerError } from '../../broker/errors.js';
import { parseJsonStrict } from '../../broker/strict-json.js';
import fc from 'fast-check';
import { NO_RATE_LIMITS } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave } from '../support/enclave.js';
import { countAbortListeners } from '../support/abort-listeners.js';
import { rawClient as openRawClient, type RawClient } from '../support/raw-client.js';
import { duplicateKeyOf } from '../support/strict-json.js';

const LIMIT = 16 * 1024;
let dir: string;
let pki: TestPki;
let broker: RunningBroker;
const lines: Array<Record<string, unknown>> = [];
const sockets: Socket[] = [];
const agent = new Agent({ keepAlive: true, maxSockets: 4 });

/** A broker whose request log lines are kept in `lines`. */
async function startLogged(name: string, extra: Partial<BrokerConfig> = {}): Promise<RunningBroker> {
  const log: Logger = (_level, message, fields) => {
    if (message === 'request') lines.push(fields ?? {});
  };
  return startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: join(dir, name, 'store'), stateDir: join(dir, name, 'state'), extraRootPems: [pki.root.pem], rateLimits: NO_RATE_LIMITS, maxBodyBytes: LIMIT, ...extra }),
    { log },
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-http-body-'));
  pki = await createTestPki(Date.now());
  broker = await startLogged('main');
  await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'db', value: new TextEncoder().encode('db-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
});
afterAll(async () => {
  agent.destroy();
  for (const s of sockets) s.destroy();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A raw client socket on `b`'s port (test/support/raw-client.ts), destroyed after each test. */
const rawClient = (b: RunningBroker): Promise<RawClient> => openRawClient(b.url, sockets);

/** The error code of the first answer in raw HTTP/1.1 text. */
function firstAnswer(raw: string): { status: number; code: string | undefined } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(raw)?.[1] ?? 0);
  return { status, code: /"code":"([A-Z_]+)"/.exec(raw)?.[1] };
}

/** Server-side connections still open. */
function connections(b: RunningBroker): Promise<number> {
  return new Promise((resolve, reject) => b.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

/** One request over node:http (no AbortSignal on the client side), answering status and error code. */
function call(b: RunningBroker, path: string, body: string): Promise<{ status: number; code: string | undefined; body: string }> {
  const { hostname, port } = new URL(b.url);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (/"code":"([A-Z_]+)"/.exec(text) ?? [])[1], body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const enclaveBody = async (enclave: TestEnclave): Promise<string> => JSON.stringify({ attestation: Buffer.from(enclave.document(await enclave.challenge())).toString('base64'), names: ['db'] });

describe('POST bodies without a fetch Request', () => {
  it('releases and refusals over POST register no AbortSignal listener per request (the node adapter builds no Request)', async () => {
    const enclave = new TestEnclave(pki, broker.url);
    const bodies = await Promise.all(Array.from({ length: 20 }, () => enclaveBody(enclave)));
    const answers: Array<[number, string | undefined]> = [];
    const listeners = await countAbortListeners(async () => {
      for (const body of bodies) answers.push([(await call(broker, '/v1/secrets', body)).status, undefined]);
      const bad = await call(broker, '/v1/secrets', '{"attestation":"AAAA","names":["db"],"names":["db"]}');
      answers.push([bad.status, bad.code]);
    });
    expect(answers).toEqual([...Array.from({ length: 20 }, () => [200, undefined]), [400, 'BAD_REQUEST']]);
    expect(listeners).toBe(0);
  }, 60_000);

  it('a chunked body in several pieces is read whole and released', async () => {
    const enclave = new TestEnclave(pki, broker.url);
    const body = await enclaveBody(enclave);
    const client = await rawClient(broker);
    client.socket.write('POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n');
    for (let at = 0; at < body.length; at += 1000) {
      const piece = body.slice(at, at + 1000);
      client.socket.write(`${piece.length.toString(16)}\r\n${piece}\r\n`);
    }
    client.socket.write('0\r\n\r\n');
    await expect.poll(client.closed, { timeout: 20_000, interval: 50 }).toBe(true);
    expect(firstAnswer(client.received()).status).toBe(200);
    expect(client.received()).toMatch(/"secrets":\[/);
  }, 60_000);
});

describe('the byte limit', () => {
  it('a declared Content-Length over the limit is refused before any body byte is sent', async () => {
    const client = await rawClient(broker);
    client.socket.write(`POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${LIMIT + 1}\r\n\r\n`);
    await expect.poll(client.received, { timeout: 20_000, interval: 50 }).toMatch(/\r\n\r\n\{.*\}$/s);
    expect(firstAnswer(client.received())).toEqual({ status: 413, code: 'PAYLOAD_TOO_LARGE' });
  }, 60_000);

  it('a chunked body is refused as soon as it passes the limit, while the client is still sending', async () => {
    const client = await rawClient(broker);
    client.socket.write('POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n');
    const piece = 'A'.repeat(4096);
    for (let sent = 0; sent <= LIMIT; sent += piece.length) client.socket.write(`1000\r\n${piece}\r\n`);
    // No terminating chunk: the body never ends, the answer comes anyway.
    await expect.poll(client.received, { timeout: 20_000, interval: 50 }).toMatch(/\r\n\r\n\{.*\}$/s);
    expect(firstAnswer(client.received())).toEqual({ status: 413, code: 'PAYLOAD_TOO_LARGE' });
  }, 60_000);

  it('a body of exactly the limit is read (and judged on its content)', async () => {
    const json = '{"attestation":"AAAA","names":["db"]}';
    const res = await call(broker, '/v1/secrets', json + ' '.repeat(LIMIT - json.length));
    expect([res.status, res.code]).toEqual([400, 'MALFORMED_COSE']);
    const over = await call(broker, '/v1/secrets', json + ' '.repeat(LIMIT - json.length + 1));
    expect([over.status, over.code]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
  }, 60_000);
});

describe('a Content-Length that lies', () => {
  it('shorter than the bytes sent: exactly the declared bytes are the body; what follows is the next request', async () => {
    const json = '{"attestation":"AAAA","names":["db"]}';
    const client = await rawClient(broker);
    // One write: the declared body, then bytes the body would have to swallow if the length were not obeyed.
    client.socket.write(`POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\n\r\n${json}GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    await expect.poll(client.closed, { timeout: 20_000, interval: 50 }).toBe(true);
    const answers = client.received().split(/(?=HTTP\/1\.1 )/);
    expect(answers.map(firstAnswer)).toEqual([
      { status: 400, code: 'MALFORMED_COSE' },
      { status: 200, code: undefined },
    ]);
    expect(answers[1]).toMatch(/\{"status":"ok"\}$/);
  }, 60_000);

  it('longer than the bytes sent: no answer but the request timeout, nothing released, nothing left waiting', async () => {
    const b = await startLogged('short-body', { headersTimeoutSeconds: 0.5, requestTimeoutSeconds: 1 });
    try {
      const before = lines.length;
      const client = await rawClient(b);
      client.socket.write('POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"attestation":"AAAA"');
      await expect.poll(client.closed, { timeout: 30_000, interval: 50 }).toBe(true);
      expect(client.received()).not.toMatch(/ 200 OK/);
      // The read ended with the connection (the request is logged, so nothing still waits for bytes).
      await expect.poll(() => lines.slice(before).map((l) => [l.route, l.code]), { timeout: 20_000, interval: 50 }).toEqual([['/v1/secrets', 'BAD_REQUEST']]);
      await expect.poll(() => connections(b), { timeout: 20_000, interval: 50 }).toBe(0);
      expect((await fetch(`${b.url}/healthz`)).status).toBe(200);
    } finally {
      await b.close();
    }
  }, 90_000);
});

describe('client goes away mid-body', () => {
  it('a client that closes mid-body (declared length or chunked) leaves no pending read: logged, connection gone, broker serves', async () => {
    const b = await startLogged('abort');
    try {
      const before = lines.length;
      for (const head of [`Content-Length: 2000\r\n\r\n{"attestation":"`, `Transfer-Encoding: chunked\r\n\r\n11\r\n{"attestation":"A\r\n`]) {
        const client = await rawClient(b);
        // Gone once the broker has the request (its handler runs in the 'request' event, so the body read has begun).
        const started = new Promise<void>((resolve) => b.server.once('request', () => resolve()));
        client.socket.write(`POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${head}`);
        await started;
        client.socket.destroy();
        await expect.poll(() => lines.length - before, { timeout: 20_000, interval: 50 }).toBe(head.startsWith('Content') ? 1 : 2);
      }
      // Each read settled (the answer nobody receives is logged): a client that left is BAD_REQUEST, never a release.
      expect(lines.slice(before).map((l) => [l.status, l.code])).toEqual([
        [400, 'BAD_REQUEST'],
        [400, 'BAD_REQUEST'],
      ]);
      await expect.poll(() => connections(b), { timeout: 20_000, interval: 50 }).toBe(0);
      expect((await fetch(`${b.url}/healthz`)).status).toBe(200);
    } finally {
      await b.close();
    }
  }, 60_000);
});

describe('served without node (app.request)', () => {
  const app = createBrokerApp({
    release: { release: () => Promise.reject(new BrokerError('POLICY_DENIED', 'read the body')) },
    challenge: { issue: () => ({ nonce: new Uint8Array(32), expiresAt: 0 }) },
    metrics: { render: () => '' },
    brokerKey: {},
    maxBodyBytes: 1024,
    clock: () => 0,
    ready: () => Promise.resolve(),
  } as unknown as BrokerAppDependencies);
  const stream = (text: string): ReadableStream<Uint8Array> =>
    new ReadableStream({
      start(controller) {
        for (let at = 0; at < text.length; at += 100) controller.enqueue(new TextEncoder().encode(text.slice(at, at + 100)));
        controller.close();
      },
    });
  const post = async (body: string | ReadableStream<Uint8Array>): Promise<[number, string]> => {
    const res = await app.request('/v1/secrets', { method: 'POST', headers: { 'content-type': 'application/json' }, body, ...(typeof body === 'string' ? {} : { duplex: 'half' }) } as RequestInit);
    return [res.status, ((await res.json()) as { error: { code: string } }).error.code];
  };

  it('applies the same limit to a body with a length and to a streamed one', async () => {
    const ok = JSON.stringify({ attestation: 'AAAA', names: ['db'] });
    const big = JSON.stringify({ attestation: 'A'.repeat(2048), names: ['db'] });
    expect(await post(ok)).toEqual([403, 'POLICY_DENIED']);
    expect(await post(stream(ok))).toEqual([403, 'POLICY_DENIED']);
    expect(await post(big)).toEqual([413, 'PAYLOAD_TOO_LARGE']);
    expect(await post(stream(big))).toEqual([413, 'PAYLOAD_TOO_LARGE']);
  });
});

describe('strict JSON: the duplicate-key scan jumps over strings', () => {
  const duplicateOf = duplicateKeyOf;

  it.each([
    ['a value ending in an escaped backslash', String.raw`{"a":"x\\","a":1}`, 'a'],
    ['a value ending in an escaped backslash and an escaped quote', String.raw`{"v":"\\\"","k":1,"k":2}`, 'k'],
    ['a key that is only escaped backslashes', String.raw`{"\\\\":1,"\\\u005c":2}`, '\\\\'],
    ['after a long value of escapes', `{"v":"${String.raw`\\\"`.repeat(20_000)}","k":1,"k":2}`, 'k'],
  ])('finds the repeated key: %s', (_name, text, key) => {
    expect(duplicateOf(text)).toBe(key);
  });

  it('agrees on keys and values made of backslashes and quotes, with and without a repeated key', () => {
    const tricky = fc.string({ unit: fc.constantFrom('\\', '"', 'a', 'k', '\u00e9'), maxLength: 12 });
    /** A key's JSON spelling, sometimes with its first character as a \\u escape (the same key). */
    const spell = (key: string, escaped: boolean): string =>
      escaped && key.length > 0 ? `"\\u${key.charCodeAt(0).toString(16).padStart(4, '0')}${JSON.stringify(key.slice(1)).slice(1)}` : JSON.stringify(key);
    fc.assert(
      fc.property(fc.uniqueArray(tricky, { minLength: 1, maxLength: 6 }), fc.array(tricky, { minLength: 6, maxLength: 6 }), fc.option(fc.nat(), { nil: undefined }), fc.boolean(), (keys, values, repeat, escaped) => {
        const members = keys.map((k, i) => `${JSON.stringify(k)}:${JSON.stringify(values[i])}`);
        if (repeat === undefined) {
          const text = `{${members.join(',')}}`;
          expect(duplicateOf(text)).toBeUndefined();
          expect(parseJsonStrict(text)).toEqual(JSON.parse(text));
        } else {
          const key = keys[repeat % keys.length]!;
          const text = `{${members.join(',')},"x":[${JSON.stringify(values[0])},{"y":1}],${spell(key, escaped)}:0}`;
          expect(JSON.parse(text)).toHaveProperty([key]);
          expect(duplicateOf(text)).toBe(key);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('the attestation member of a JSON body is strict base64', () => {
  const seen: string[] = [];
  const app = createBrokerApp({
    release: {
      release: (attestation: Uint8Array) => {
        seen.push(Buffer.from(attestation).toString('hex'));
        return Promise.reject(new BrokerError('POLICY_DENIED', 'read the document'));
      },
    },
    challenge: { issue: () => ({ nonce: new Uint8Array(32), expiresAt: 0 }) },
    metrics: { render: () => '' },
    brokerKey: {},
    maxBodyBytes: 64 * 1024,
    clock: () => 0,
    ready: () => Promise.resolve(),
  } as unknown as BrokerAppDependencies);
  const post = async (attestation: unknown): Promise<[number, string, string | undefined]> => {
    seen.length = 0;
    const res = await app.request('/v1/secrets', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ attestation, names: ['db'] }) });
    return [res.status, ((await res.json()) as { error: { code: string } }).error.code, seen[0]];
  };

  it.each([
    ['a number', 12],
    ['empty', ''],
    ['a length that is not a multiple of 4', 'AAAAA'],
    ['base64url characters', 'AA-_'],
    ['a space inside', 'AA AAAAA'],
    ['a line break at the end', 'AAAAAAA\n'],
    ['padding inside', 'AA==AAAA'],
    ['three padding characters', 'A==='],
    ['only padding', '===='],
    ['a character outside ASCII whose low byte is a base64 letter', 'AAA\u0141'],
  ])('refuses %s with BAD_REQUEST before anything reads it', async (_name, attestation) => {
    expect(await post(attestation)).toEqual([400, 'BAD_REQUEST', undefined]);
  });

  it.each([
    ['canonical, no padding', 'AAEC', '000102'],
    ['canonical, one padding character', 'AAE=', '0001'],
    ['canonical, two', 'AA==', '00'],
    ['non-canonical trailing bits (the pattern allows them; the decoded bytes are the same)', 'AB==', '00'],
    ['a long document', Buffer.alloc(6000, 0xa5).toString('base64'), 'a5'.repeat(6000)],
  ])('accepts %s and hands over exactly the decoded bytes', async (_name, attestation, hex) => {
    expect(await post(attestation)).toEqual([403, 'POLICY_DENIED', hex]);
  });
});
