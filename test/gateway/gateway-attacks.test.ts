/**
 * Adversarial review of credential substitution (issue 13): a compromised agent inside the enclave holds a
 * valid gateway token and its attested key, and crafts raw requests to the gateway to reach upstream paths
 * its allow-list does not name, to make the broker send the real key anywhere but the upstream's allowed
 * routes, or to smuggle headers. Each attack must be refused with its exact code, audited, and nothing (or
 * only the allowed request) reaches the upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, request as httpsRequest, type Server as HttpsServer } from 'node:https';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { constants, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';
import { startGatewayFixture, type GatewayFixture } from '../support/gateway.js';
import { errorOf } from '../support/agent.js';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { createAgent } from '../../enclave-agent/index.js';
import type { JWK } from 'jose';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { loopbackCa, selfSigned } from '../support/tls.js';
import { CHANNEL_BINDING_BYTES, CHANNEL_BINDING_CONTEXT, CHANNEL_BINDING_HEADER, CHANNEL_BINDING_LABEL, GATEWAY_CALL_PREFIX, GATEWAY_TOKEN_HEADER } from '../../broker/protocol/index.js';

const KEY = 'sk-real-attack-key-0123456789abcdef';
/** A key with non-ASCII bytes (UTF-8 é and ✓): a valid header value, to arrive byte for byte. */
const NON_ASCII_KEY = 'sk-caf\u00e9-\u2713';

let dir: string;
let simulator: NsmSimulator;
let broker: RunningBroker;
let gatewayPort: number;
let upstream: HttpsServer;
let upstreamOrigin: string;
/** Another HTTPS server with a certificate the broker trusts: a redirect target that must never see the key. */
let elsewhere: HttpsServer;
let elsewhereOrigin: string;
const seen: Array<{ method: string; url: string; headers: Record<string, unknown> }> = [];
const seenElsewhere: Array<{ url: string; headers: Record<string, unknown> }> = [];

const auditLines = (): Array<{ decision: string; code: string; secret: string | null; gateway?: { path: string; jti?: string } }> =>
  readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as { decision: string; code: string; secret: string | null }).filter((r) => r.decision !== undefined);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-gw-attack-'));
  simulator = await NsmSimulator.create({ warn: () => {} });
  const { caPem, server } = await loopbackCa();
  const gatewayTls = await selfSigned();
  writeFileSync(join(dir, 'gw.crt'), gatewayTls.certPem);
  writeFileSync(join(dir, 'gw.key'), gatewayTls.keyPem);
  writeFileSync(join(dir, 'upstream-ca.pem'), caPem);
  elsewhere = createHttpsServer({ cert: server.certPem, key: server.keyPem }, (req, res) => {
    seenElsewhere.push({ url: req.url!, headers: req.headers });
    req.resume();
    res.end('{}');
  });
  await new Promise<void>((r) => elsewhere.listen(0, '127.0.0.1', () => r()));
  elsewhereOrigin = `https://localhost:${(elsewhere.address() as AddressInfo).port}`;
  upstream = createHttpsServer({ cert: server.certPem, key: server.keyPem }, (req, res) => {
    seen.push({ method: req.method!, url: req.url!, headers: req.headers });
    req.resume();
    req.on('end', () => {
      if (req.url === '/v1/echo/redirect') {
        res.writeHead(307, { location: `${elsewhereOrigin}/steal` });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'keygate-gateway-error': 'REVOKED' });
      res.end('{"ok":true}');
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  upstreamOrigin = `https://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  broker = await startTestBroker(dir, [simulator.rootPem], { gateway: { listen: '127.0.0.1:0', certFile: join(dir, 'gw.crt'), keyFile: join(dir, 'gw.key'), upstreamCaFile: join(dir, 'upstream-ca.pem') } });
  gatewayPort = Number(new URL(broker.gatewayUrl!).port);
  const p = simulator.pcrs;
  await bindSecret(broker.store, broker.providers.get('local')!, {
    secret: 'openai', value: new TextEncoder().encode(KEY), allow: [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })], provider: 'local', ttlSeconds: 60,
    inject: { upstream: upstreamOrigin, header: 'authorization', template: 'Bearer {value}', routes: ['POST /v1/echo/*', 'GET /v1/models'], maxBodyBytes: 1024, budget: { requests: 1000, windowSeconds: 60 } },
  });
  await bindSecret(broker.store, broker.providers.get('local')!, {
    secret: 'budget5', value: new TextEncoder().encode('sk-budget5'), allow: [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })], provider: 'local', ttlSeconds: 60,
    inject: { upstream: upstreamOrigin, header: 'authorization', template: 'Bearer {value}', routes: ['GET /v1/models'], maxBodyBytes: 1024, budget: { requests: 5, windowSeconds: 3600 } },
  });
  await bindSecret(broker.store, broker.providers.get('local')!, {
    secret: 'nonascii', value: new TextEncoder().encode(NON_ASCII_KEY), allow: [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })], provider: 'local', ttlSeconds: 60,
    inject: { upstream: upstreamOrigin, header: 'x-api-key', template: '{value}', routes: ['GET /v1/models'], maxBodyBytes: 1024, budget: { requests: 1000, windowSeconds: 60 } },
  });
}, 120_000);

afterAll(async () => {
  await broker?.close();
  for (const s of [upstream, elsewhere]) {
    s?.closeAllConnections();
    await new Promise<void>((r) => (s ? s.close(() => r()) : r()));
  }
  rmSync(dir, { recursive: true, force: true });
});

async function connectGateway(): Promise<TLSSocket> {
  const socket = tlsConnect({ host: '127.0.0.1', port: gatewayPort, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function send(socket: TLSSocket, method: string, path: string, headers: Record<string, string>, body = ''): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: gatewayPort, method, path, headers: { 'content-length': String(Buffer.byteLength(body)), connection: 'keep-alive', ...headers }, createConnection: () => socket });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The compromised agent's position: a connection, a valid token for `openai` and the attested key it is bound to. */
interface Session {
  readonly socket: TLSSocket;
  readonly headers: Record<string, string>;
  readonly token: string;
  readonly key: KeyObject;
}

async function session(name = 'openai'): Promise<Session> {
  const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const socket = await connectGateway();
  const challenge = JSON.parse((await send(socket, 'GET', '/v1/gateway/challenge', {})).body) as { nonce: string };
  const doc = await simulator.client().attest({ nonce: Buffer.from(challenge.nonce, 'base64'), publicKey: new Uint8Array(k.publicKey.export({ format: 'der', type: 'spki' })) });
  const answer = JSON.parse((await send(socket, 'POST', '/v1/gateway/token', { 'content-type': 'application/json' }, JSON.stringify({ attestation: Buffer.from(doc).toString('base64'), name }))).body) as { token: string };
  return { socket, token: answer.token, key: k.privateKey, headers: { [GATEWAY_TOKEN_HEADER]: answer.token, [CHANNEL_BINDING_HEADER]: bindingFor(socket, k.privateKey) } };
}

function bindingFor(socket: TLSSocket, key: KeyObject): string {
  const exporter = socket.exportKeyingMaterial(CHANNEL_BINDING_BYTES, CHANNEL_BINDING_LABEL, Buffer.alloc(0));
  return sign('sha256', Buffer.concat([Buffer.from(CHANNEL_BINDING_CONTEXT), exporter]), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }).toString('base64url');
}

const codeOf = (a: Answer): string | undefined => (JSON.parse(a.body || '{}') as { error?: { code?: string } }).error?.code;

describe('path tricks: what the allow-list names is what the upstream serves', () => {
  it('a control call on an allowed prefix route is served with the real key', async () => {
    const s = await session();
    const before = seen.length;
    const a = await send(s.socket, 'POST', `${GATEWAY_CALL_PREFIX}openai/v1/echo/x?a=1`, s.headers, '{}');
    expect(a.status).toBe(200);
    expect(seen.slice(before).map((r) => [r.method, r.url, r.headers.authorization])).toEqual([['POST', '/v1/echo/x?a=1', `Bearer ${KEY}`]]);
    s.socket.destroy();
  });

  it('dot segments with path parameters (`..;`, as Tomcat/Spring resolve them) or double encoding are refused: ROUTE_DENIED, audited UNSAFE_PATH, nothing forwarded', async () => {
    const s = await session();
    const before = seen.length;
    const unsafeBefore = auditLines().filter((r) => r.code === 'UNSAFE_PATH').length;
    const paths = ['/v1/echo/..;/admin', '/v1/echo/..;x=1/admin', '/v1/echo/%2e%2e;/admin', '/v1/echo/.;/admin', '/v1/echo/.%2E;jsessionid=1/admin', '/v1/echo/%252e%252e/admin', '/v1/echo/x%252fy', '/v1/echo/%255c..', '/v1/echo/%2e%2e%3b/admin', '/v1/echo/.../admin'];
    for (const path of paths) {
      const a = await send(s.socket, 'POST', `${GATEWAY_CALL_PREFIX}openai${path}`, s.headers, '{}');
      expect([path, a.status, codeOf(a)]).toEqual([path, 403, 'ROUTE_DENIED']);
    }
    expect(seen.length).toBe(before);
    expect(auditLines().filter((r) => r.code === 'UNSAFE_PATH').length).toBe(unsafeBefore + paths.length);
    s.socket.destroy();
  });

  it('plain dot segments, empty segments, encoded slashes and backslashes stay refused', async () => {
    const s = await session();
    const before = seen.length;
    for (const path of ['/v1/echo/../../admin', '/v1/echo/%2e%2e/admin', '/v1/echo//admin', '/v1/echo/%2fadmin', '/v1/echo/%5c..%5cadmin', '/v1/echo/\\..\\admin', '//elsewhere/v1/echo/x']) {
      const a = await send(s.socket, 'POST', `${GATEWAY_CALL_PREFIX}openai${path}`, s.headers, '{}');
      expect([path, a.status, codeOf(a)]).toEqual([path, 403, 'ROUTE_DENIED']);
    }
    expect(seen.length).toBe(before);
    s.socket.destroy();
  });

  it('method- or path-override headers (X-HTTP-Method-Override, X-Original-URL, ...) are refused: ROUTE_DENIED, audited ROUTE_OVERRIDE, nothing forwarded', async () => {
    const s = await session();
    const before = seen.length;
    const overrides: Array<[string, string]> = [['x-http-method-override', 'DELETE'], ['X-HTTP-Method', 'DELETE'], ['x-method-override', 'PUT'], ['X-Original-URL', '/v1/admin'], ['x-rewrite-url', '/v1/admin']];
    for (const [name, value] of overrides) {
      const a = await send(s.socket, 'POST', `${GATEWAY_CALL_PREFIX}openai/v1/echo/x`, { ...s.headers, [name]: value }, '{}');
      expect([name, a.status, codeOf(a)]).toEqual([name, 403, 'ROUTE_DENIED']);
    }
    expect(seen.length).toBe(before);
    expect(auditLines().filter((r) => r.code === 'ROUTE_OVERRIDE')).toHaveLength(overrides.length);
    s.socket.destroy();
  });

  it('HEAD, OPTIONS and PUT do not ride on a GET or POST route', async () => {
    const s = await session();
    const before = seen.length;
    for (const method of ['HEAD', 'OPTIONS', 'PUT']) {
      const a = await send(s.socket, method, `${GATEWAY_CALL_PREFIX}openai/v1/models`, s.headers);
      expect([method, a.status]).toEqual([method, 403]);
    }
    expect(seen.length).toBe(before);
    s.socket.destroy();
  });
});

describe('the key goes to the upstream only', () => {
  it('an absolute-form request target or a Host header does not change where the broker calls', async () => {
    const s = await session();
    const before = seen.length;
    const elsewhereBefore = seenElsewhere.length;
    const abs = await send(s.socket, 'GET', `${elsewhereOrigin}${GATEWAY_CALL_PREFIX}openai/v1/models`, s.headers);
    expect(abs.status).toBe(404);
    const host = await send(s.socket, 'GET', `${GATEWAY_CALL_PREFIX}openai/v1/models`, { ...s.headers, host: new URL(elsewhereOrigin).host });
    expect(host.status).toBe(200);
    expect(seen.slice(before).map((r) => r.headers.host)).toEqual([new URL(upstreamOrigin).host]);
    expect(seenElsewhere.length).toBe(elsewhereBefore);
    s.socket.destroy();
  });

  it('an upstream redirect is passed back, never followed: the redirect target sees no key', async () => {
    const s = await session();
    const elsewhereBefore = seenElsewhere.length;
    const a = await send(s.socket, 'POST', `${GATEWAY_CALL_PREFIX}openai/v1/echo/redirect`, s.headers, '{}');
    expect(a.status).toBe(307);
    expect(seenElsewhere.length).toBe(elsewhereBefore);
    s.socket.destroy();
  });

  it('hop-by-hop, the gateway\'s own and the credential header sent by the agent are not forwarded; the upstream cannot forge a gateway refusal', async () => {
    const s = await session();
    const before = seen.length;
    const a = await send(s.socket, 'GET', `${GATEWAY_CALL_PREFIX}openai/v1/models`, { ...s.headers, authorization: 'Bearer kgsub-x', connection: 'keep-alive, authorization', 'proxy-authorization': 'Basic eA==', 'x-other': 'kept' });
    expect(a.status).toBe(200);
    expect(a.headers['keygate-gateway-error']).toBeUndefined();
    const got = seen.slice(before);
    expect(got).toHaveLength(1);
    expect(got[0]!.headers).toMatchObject({ authorization: `Bearer ${KEY}`, 'x-other': 'kept' });
    expect(Object.keys(got[0]!.headers).filter((h) => h.startsWith('keygate-') || h === 'proxy-authorization')).toEqual([]);
    expect(JSON.stringify(got[0]!.headers)).not.toContain('kgsub-x');
    s.socket.destroy();
  });

  it('request smuggling (Transfer-Encoding with Content-Length) is a 400 from the parser; nothing is forwarded', async () => {
    const s = await session();
    const before = seen.length;
    const auth = Object.entries(s.headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    const raw = `POST ${GATEWAY_CALL_PREFIX}openai/v1/echo/x HTTP/1.1\r\nhost: gw\r\n${auth}content-length: 60\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET ${GATEWAY_CALL_PREFIX}openai/v1/admin HTTP/1.1\r\nhost: gw\r\n\r\n`;
    const answer = await new Promise<string>((resolve) => {
      const chunks: Buffer[] = [];
      s.socket.on('data', (c: Buffer) => chunks.push(c));
      s.socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
      s.socket.write(raw);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(seen.length).toBe(before);
  });

  it('a chunked body over the limit is refused (BODY_TOO_LARGE) and nothing is forwarded', async () => {
    const s = await session();
    const before = seen.length;
    const a = await new Promise<Answer>((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: gatewayPort, method: 'POST', path: `${GATEWAY_CALL_PREFIX}openai/v1/echo/x`, headers: { ...s.headers, 'transfer-encoding': 'chunked' }, createConnection: () => s.socket });
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      });
      req.on('error', reject);
      for (let i = 0; i < 8; i++) req.write('x'.repeat(512));
      req.end();
    });
    expect([a.status, codeOf(a)]).toEqual([403, 'BODY_TOO_LARGE']);
    expect(seen.length).toBe(before);
    s.socket.destroy();
  });

  it('a key with non-ASCII bytes reaches the upstream byte for byte (README: "substituted byte for byte")', async () => {
    const s = await session('nonascii');
    const before = seen.length;
    const a = await send(s.socket, 'GET', `${GATEWAY_CALL_PREFIX}nonascii/v1/models`, s.headers);
    expect(a.status).toBe(200);
    const got = seen.slice(before);
    expect(got).toHaveLength(1);
    // Node reads header bytes as latin1: this recovers the bytes on the wire.
    expect(Buffer.from(got[0]!.headers['x-api-key'] as string, 'latin1').toString('hex')).toBe(Buffer.from(NON_ASCII_KEY, 'utf8').toString('hex'));
    s.socket.destroy();
  });

  it('the key is in no audit record', () => {
    expect(readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')).not.toContain(KEY);
  });
});

describe('budgets and slow upstreams', () => {
  it('concurrent calls on separate connections cannot overspend the budget: exactly `requests` are forwarded, the rest BUDGET_EXCEEDED', async () => {
    const s = await session('budget5');
    const before = seen.length;
    const sockets = await Promise.all(Array.from({ length: 12 }, () => connectGateway()));
    const answers = await Promise.all(
      sockets.map((socket) => send(socket, 'GET', `${GATEWAY_CALL_PREFIX}budget5/v1/models`, { [GATEWAY_TOKEN_HEADER]: s.token, [CHANNEL_BINDING_HEADER]: bindingFor(socket, s.key) })),
    );
    expect(answers.filter((a) => a.status === 200)).toHaveLength(5);
    expect(answers.filter((a) => a.status !== 200).map(codeOf)).toEqual(Array(7).fill('BUDGET_EXCEEDED'));
    expect(seen.length).toBe(before + 5);
    for (const socket of [s.socket, ...sockets]) socket.destroy();
  });
});

describe('a compromised agent looping on denied calls', () => {
  it('cannot fill the audit disk: past 5 denials/s (burst 20) per identity, denials are sampled like unauthenticated junk; every caller still gets its code', async () => {
    const s = await session();
    const jti = (JSON.parse(Buffer.from(s.token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti;
    const before = seen.length;
    const started = performance.now();
    // At least 200 calls, and on a slow (loaded) machine more, until the calls outnumber what the rate bound
    // below allows to be recorded individually (so sampling must show); bounded in count and time.
    const seconds = (): number => (performance.now() - started) / 1000;
    let calls = 0;
    while (calls < 200 || (30 + Math.ceil(6 * seconds()) >= calls && calls < 3_000 && seconds() < 90)) {
      const a = await send(s.socket, 'GET', `${GATEWAY_CALL_PREFIX}openai/v1/not-allowed`, s.headers);
      expect(codeOf(a)).toBe('ROUTE_DENIED');
      calls++;
    }
    const elapsed = seconds();
    expect(seen.length).toBe(before);
    const individual = auditLines().filter((r) => (r.gateway as { jti?: string } | undefined)?.jti === jti).length;
    // Some are recorded individually (the identity's burst, less what earlier tests in this file spent with the
    // same identity); beyond it, at most its sustained rate plus the audit's own per-client refusal sample (1/s, burst 10).
    expect(individual).toBeGreaterThan(0);
    expect(individual).toBeLessThanOrEqual(30 + Math.ceil(6 * elapsed));
    expect(individual).toBeLessThan(calls);
    s.socket.destroy();
  }, 120_000);
});

describe('an upstream that never answers', () => {
  let fx: GatewayFixture;
  const held: Socket[] = [];
  const silent = createTcpServer((socket: Socket) => void held.push(socket.on('error', () => undefined)));
  beforeAll(async () => {
    fx = await startGatewayFixture({}, { upstreamTimeoutMs: 1_000 });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
    for (const socket of held) socket.destroy();
    await new Promise<void>((r) => silent.close(() => r()));
  });

  it('is given up after gateway.upstreamTimeoutMs: UPSTREAM_UNAVAILABLE, audited ETIMEDOUT', async () => {
    await fx.bind('silent', 'sk-silent', { upstream: `https://127.0.0.1:${(silent.address() as AddressInfo).port}` });
    const a = await fx.agent();
    expect((await errorOf(a.fetch('silent', '/v1/x'))).code).toBe('UPSTREAM_UNAVAILABLE');
    const last = readFileSync(join(fx.dir, 'state', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { code?: string; secret?: string }).filter((r) => r.code !== undefined).at(-1);
    expect(last).toMatchObject({ code: 'UPSTREAM_UNAVAILABLE:ETIMEDOUT', secret: 'silent' });
  }, 60_000);
});

describe('no other path releases an inject value', () => {
  it('a delegation of an inject name is refused (POLICY_DENIED, audited INJECT_ONLY); a name delegated before it became inject is not released to the sub-agent', async () => {
    const brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
    const p = simulator.pcrs;
    const local = broker.providers.get('local')!;
    await bindSecret(broker.store, local, { secret: 'plain', value: new TextEncoder().encode(KEY), allow: [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })], provider: 'local', ttlSeconds: 60 });
    const subSim = await simulator.sibling({ pcrs: { 0: 'ab'.repeat(48) } });
    const audience = { pcrs: { 0: subSim.pcrs[0]!, 1: subSim.pcrs[1]!, 2: subSim.pcrs[2]! } };
    const parent = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: simulator.client() });
    try {
      expect((await errorOf(parent.delegate({ names: ['openai'], ttl: 30, audience, maxUses: 2 }))).code).toBe('POLICY_DENIED');
      expect(auditLines().filter((r) => r.secret === 'openai' && r.decision === 'deny').at(-1)).toMatchObject({ code: 'INJECT_ONLY' });
      const delegation = await parent.delegate({ names: ['plain'], ttl: 30, audience, maxUses: 2 });
      // The admin turns `plain` into an inject binding; the delegation issued before must not release it.
      await bindSecret(broker.store, local, { secret: 'plain', value: new TextEncoder().encode(KEY), allow: [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })], provider: 'local', ttlSeconds: 60, inject: { upstream: upstreamOrigin, header: 'authorization', template: 'Bearer {value}', routes: ['GET /v1/models'], maxBodyBytes: 1024, budget: { requests: 10, windowSeconds: 60 } } });
      const sub = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: subSim.client(), delegation: delegation.token });
      try {
        expect((await errorOf(sub.getSecret('plain'))).code).toBe('POLICY_DENIED');
      } finally {
        await sub.close();
      }
      expect(readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')).not.toContain(KEY);
    } finally {
      await parent.close();
    }
  });
});

describe('request bodies held at once', () => {
  let fx: GatewayFixture;
  beforeAll(async () => {
    fx = await startGatewayFixture({}, { maxBufferedBodyBytes: 3_000 });
    await fx.bind('bodies', 'sk-bodies');
  }, 120_000);
  afterAll(async () => {
    await fx?.close();
  });

  it('are capped (gateway.maxBufferedBodyBytes): a call whose body would pass the cap is refused RATE_LIMITED (429) before it is read; nothing forwarded', async () => {
    const a = await fx.agent();
    // The agent's own connection machinery gives a token; a raw connection holds a body half sent.
    await (await a.fetch('bodies', '/v1/warm', { method: 'POST', body: '{}' })).text();
    const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const socket = tlsConnect({ host: '127.0.0.1', port: fx.gatewayPort, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    const challenge = await new Promise<{ nonce: string }>((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: fx.gatewayPort, method: 'GET', path: '/v1/gateway/challenge', headers: { connection: 'keep-alive' }, createConnection: () => socket }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString()) as { nonce: string }));
      });
      req.on('error', reject);
      req.end();
    });
    const doc = await fx.simulator.client().attest({ nonce: Buffer.from(challenge.nonce, 'base64'), publicKey: new Uint8Array(k.publicKey.export({ format: 'der', type: 'spki' })) });
    const tokenBody = JSON.stringify({ attestation: Buffer.from(doc).toString('base64'), name: 'bodies' });
    const token = await new Promise<string>((resolve, reject) => {
      const req = httpsRequest({ host: '127.0.0.1', port: fx.gatewayPort, method: 'POST', path: '/v1/gateway/token', headers: { connection: 'keep-alive', 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(tokenBody)) }, createConnection: () => socket }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve((JSON.parse(Buffer.concat(chunks).toString()) as { token: string }).token));
      });
      req.on('error', reject);
      req.end(tokenBody);
    });
    const seenBefore = fx.seen.length;
    // The held call gets a connection of its own (bound to the same key): nothing of the token exchange's
    // keep-alive connection can delay its headers (CI once saw 30 s of calls served and none refused).
    const held1 = tlsConnect({ host: '127.0.0.1', port: fx.gatewayPort, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
    await new Promise<void>((resolve, reject) => {
      held1.once('secureConnect', resolve);
      held1.once('error', reject);
    });
    // 2000 bytes announced, 10 sent: the gateway holds (reserves) 2000 until the body is complete.
    let held!: (a: number) => void;
    const heldStatus = new Promise<number>((r) => (held = r));
    const slow = httpsRequest({ host: '127.0.0.1', port: fx.gatewayPort, method: 'POST', path: `${GATEWAY_CALL_PREFIX}bodies/v1/slow`, headers: { [GATEWAY_TOKEN_HEADER]: token, [CHANNEL_BINDING_HEADER]: bindingFor(held1, k.privateKey), 'content-length': '2000' }, createConnection: () => held1 }, (res) => {
      res.resume();
      held(res.statusCode!);
    });
    slow.on('error', () => held(-1)); // -1: the held call failed at the socket
    slow.flushHeaders();
    slow.write('x'.repeat(10));
    // If the held call is answered before anything is refused, say how (instead of 30 s of served calls).
    let heldEarly: number | undefined;
    void heldStatus.then((status) => (heldEarly ??= status));
    // Another call with a 2000-byte body passes the 3000-byte cap while the first is held: refused, and it never reaches the upstream.
    const deadline = Date.now() + 30_000;
    let code: string | undefined;
    let servedMeanwhile = 0; // calls that got in before the first call's headers were processed
    while (Date.now() < deadline) {
      expect(heldEarly, 'the held call was answered before any call was refused').toBeUndefined();
      const res = await a.fetch('bodies', '/v1/second', { method: 'POST', body: 'y'.repeat(2000) }).catch((e: { code?: string }) => e);
      if (res instanceof Response) {
        servedMeanwhile++;
        await res.text();
        continue;
      }
      code = res.code;
      break;
    }
    expect(code).toBe('RATE_LIMITED');
    const refused = readFileSync(join(fx.dir, 'state', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { code?: string }).filter((r) => r.code === 'BODIES_IN_FLIGHT');
    expect(refused.length).toBeGreaterThanOrEqual(1);
    slow.end('x'.repeat(1990));
    expect(await heldStatus).toBe(200);
    expect(fx.seen.length).toBe(seenBefore + 1 + servedMeanwhile);
    // Once the first body is gone, the same call is served again.
    expect((await a.fetch('bodies', '/v1/second', { method: 'POST', body: 'y'.repeat(2000) })).status).toBe(200);
    socket.destroy();
    held1.destroy();
  }, 120_000);
});
