/**
 * Credential substitution end to end (issue 13): the official `openai` client inside a simulated enclave
 * (NSM simulator, keygate/agent) talks to the agent's local gateway; the broker's gateway adds the real
 * key and calls a loopback HTTPS upstream (test CA) that checks it got the real key and never the
 * substitute. Then every refusal with its exact code, and what each call leaves in the audit log.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, request as httpsRequest, type Server as HttpsServer } from 'node:https';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { constants, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';
import { errorOf, manualClock } from '../support/agent.js';
import { bindSecret, pcrSet, revokeIdentities, rotateSecret } from '../../broker/admin.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { tcpTransport } from '../../vsock-shim/transport/transport.js';
import { createAgent, type SecretAgent } from '../../enclave-agent/index.js';
import { loopbackCa, selfSigned, type TlsPair } from '../support/tls.js';
import { CHANNEL_BINDING_BYTES, CHANNEL_BINDING_CONTEXT, CHANNEL_BINDING_HEADER, CHANNEL_BINDING_LABEL, GATEWAY_CALL_PREFIX, GATEWAY_TOKEN_HEADER } from '../../broker/protocol/index.js';
import type { InjectRule } from '../../broker/policy/types.js';

const KEY_V1 = 'sk-real-upstream-key-v1-ABCDEF0123456789';
const KEY_V2 = 'sk-real-upstream-key-v2-ZYXWVU9876543210';
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

let dir: string;
let simulator: NsmSimulator;
let broker: RunningBroker;
let brokerKey: JWK;
let gatewayTls: TlsPair;
let gatewayPort: number;
let upstream: HttpsServer;
let upstreamOrigin: string;
const agents: SecretAgent[] = [];

/** What the upstream saw: per request, its credential header and whether a substitute appeared anywhere. */
const seen: Array<{ method: string; path: string; authorization: string | undefined; raw: string }> = [];
/** Released by the test once the first streamed event reached the client (proves nothing is buffered). */
let releaseStream: () => void = () => {};

function startUpstream(server: TlsPair): Promise<HttpsServer> {
  const s = createHttpsServer({ cert: server.certPem, key: server.keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({ method: req.method!, path: req.url!, authorization: req.headers.authorization, raw: JSON.stringify(req.headers) + body });
      if (req.url === '/v1/chat/completions' && JSON.parse(body || '{}').stream === true) {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
        const chunk = (content: string, finish: string | null): string =>
          `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { content }, finish_reason: finish }] })}\n\n`;
        res.write(chunk('Hel', null));
        // The rest only once the client has the first event: a gateway that buffered would hang here.
        const gate = new Promise<void>((r) => (releaseStream = r));
        const timeout = setTimeout(() => res.destroy(), 30_000);
        void gate.then(() => {
          clearTimeout(timeout);
          res.write(chunk('lo', 'stop'));
          res.end('data: [DONE]\n\n');
        });
        return;
      }
      if (req.url === '/v1/chat/completions' || req.url?.startsWith('/v1/echo')) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: 'c0', object: 'chat.completion', created: 1, model: 'm', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' }, finish_reason: 'stop', logprobs: null }] }));
        return;
      }
      if (req.url === '/v1/teapot') {
        res.writeHead(418, { 'content-type': 'application/json' });
        res.end('{"secret-ish":"upstream error body"}');
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  return new Promise((resolve) => s.listen(0, '127.0.0.1', () => resolve(s)));
}

function inject(routes: string[], extra: Partial<InjectRule> = {}): InjectRule {
  return { upstream: upstreamOrigin, header: 'authorization', template: 'Bearer {value}', routes, maxBodyBytes: 4096, budget: { requests: 1000, windowSeconds: 60 }, ...extra };
}

async function agent(clock?: () => number): Promise<SecretAgent> {
  const a = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: simulator.client(), ...(clock ? { clock } : {}), gateway: { transport: tcpTransport('127.0.0.1', gatewayPort), spkiSha256: gatewayTls.spkiSha256, timeoutMs: 30_000 } });
  agents.push(a);
  return a;
}

interface AuditLine {
  decision: string;
  code: string;
  secret: string | null;
  version: number | null;
  moduleId: string | null;
  pcrs: Record<string, string> | null;
  gateway?: { method: string; host: string; path: string; status: number | null; bytesIn: number; bytesOut: number | null; jti: string };
}
const auditText = (): string => readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8');
const auditLines = (): AuditLine[] => auditText().split('\n').filter(Boolean).map((l) => JSON.parse(l) as AuditLine).filter((r) => r.decision !== undefined);

let allow: ReturnType<typeof pcrSet>[];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-gateway-'));
  simulator = await NsmSimulator.create({ warn: () => {} });
  const { caPem, server } = await loopbackCa();
  gatewayTls = await selfSigned();
  writeFileSync(join(dir, 'gw.crt'), gatewayTls.certPem);
  writeFileSync(join(dir, 'gw.key'), gatewayTls.keyPem);
  writeFileSync(join(dir, 'upstream-ca.pem'), caPem);
  upstream = await startUpstream(server);
  upstreamOrigin = `https://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  broker = await startTestBroker(dir, [simulator.rootPem], { gateway: { listen: '127.0.0.1:0', certFile: join(dir, 'gw.crt'), keyFile: join(dir, 'gw.key'), upstreamCaFile: join(dir, 'upstream-ca.pem') } });
  gatewayPort = Number(new URL(broker.gatewayUrl!).port);
  const p = simulator.pcrs;
  allow = [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })];
  const local = broker.providers.get('local')!;
  await bindSecret(broker.store, local, { secret: 'openai', value: enc(KEY_V1), allow, provider: 'local', ttlSeconds: 30, inject: inject(['POST /v1/chat/completions', 'POST /v1/echo*', 'GET /v1/teapot']) });
  await bindSecret(broker.store, local, { secret: 'tight', value: enc('sk-tight'), allow, provider: 'local', inject: inject(['POST /v1/echo'], { budget: { requests: 2, windowSeconds: 3600 } }) });
  await bindSecret(broker.store, local, { secret: 'strict', value: enc('sk-strict'), allow, provider: 'local', inject: inject(['GET /v1/teapot'], { allowStatus: [200] }) });
  brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
}, 120_000);

afterAll(async () => {
  for (const a of agents) await a.close();
  await broker?.close();
  await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  rmSync(dir, { recursive: true, force: true });
});

describe('the openai client in a simulated enclave, through the gateway', () => {
  it('completes a chat: the upstream gets the real key, never the substitute; one audit record with the call', async () => {
    const a = await agent();
    const gw = await a.gateway();
    const openai = new OpenAI({ baseURL: `${gw.url('openai')}/v1`, apiKey: gw.substitute('openai'), maxRetries: 0 });
    const before = seen.length;
    const completion = await openai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hello' }] });
    expect(completion.choices[0]!.message.content).toBe('hi');
    const got = seen.slice(before);
    expect(got.map((r) => [r.method, r.path, r.authorization])).toEqual([['POST', '/v1/chat/completions', `Bearer ${KEY_V1}`]]);
    expect(got[0]!.raw).not.toContain(gw.substitute('openai'));
    expect(gw.substitute('openai')).not.toContain(KEY_V1);
    const calls = auditLines().filter((r) => r.decision === 'call');
    expect(calls).toHaveLength(1);
    const call = calls[0]!;
    expect(call).toMatchObject({ code: 'FORWARDED', secret: 'openai', version: 1, moduleId: expect.stringMatching(/^i-/) });
    expect(Object.keys(call.pcrs!).sort()).toEqual(['0', '1', '2', '4']);
    expect(call.gateway).toMatchObject({ method: 'POST', host: new URL(upstreamOrigin).host, path: '/v1/chat/completions', status: 200, bytesIn: expect.any(Number) });
    expect(call.gateway!.bytesIn).toBeGreaterThan(10);
    // A token record preceded it (fresh attestation); neither the key nor the substitute is in the log.
    expect(auditLines().filter((r) => r.decision === 'token' && r.secret === 'openai')).toHaveLength(1);
    expect(auditText()).not.toContain(KEY_V1);
    expect(auditText()).not.toContain(gw.substitute('openai'));
  });

  it('streams a completion (server-sent events) without buffering it', async () => {
    const a = await agent();
    const gw = await a.gateway();
    const openai = new OpenAI({ baseURL: `${gw.url('openai')}/v1`, apiKey: gw.substitute('openai'), maxRetries: 0 });
    const stream = await openai.chat.completions.create({ model: 'm', messages: [{ role: 'user', content: 'hello' }], stream: true });
    const parts: string[] = [];
    for await (const chunk of stream) {
      parts.push(chunk.choices[0]?.delta.content ?? '');
      // The upstream sends the rest only now: had any hop buffered the answer, the first event would never arrive.
      if (parts.length === 1) releaseStream();
    }
    expect(parts.join('')).toBe('Hello');
    const last = auditLines().filter((r) => r.decision === 'call').at(-1)!;
    expect(last.gateway).toMatchObject({ status: 200, bytesOut: null });
  });

  it('agent.fetch works for code that takes a fetch; the token lives at most the binding TTL and is re-attested after it', async () => {
    const clock = manualClock();
    const a = await agent(clock.now);
    const tokensBefore = auditLines().filter((r) => r.decision === 'token').length;
    const res = await a.fetch('openai', '/v1/echo/one', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"x":1}' });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { id: string }).id).toBe('c0');
    await (await a.fetch('openai', '/v1/echo/two', { method: 'POST', body: '{}' })).text();
    expect(auditLines().filter((r) => r.decision === 'token').length).toBe(tokensBefore + 1);
    clock.advance(31_000); // past the binding's ttlSeconds (30): a new token, with a new attestation
    await (await a.fetch('openai', '/v1/echo/three', { method: 'POST', body: '{}' })).text();
    expect(auditLines().filter((r) => r.decision === 'token').length).toBe(tokensBefore + 2);
  });
});

describe('per-call policy: refusals with exact codes, each audited', () => {
  it('a route not on the allow-list: ROUTE_DENIED (403 to the SDK), nothing reaches the upstream', async () => {
    const a = await agent();
    const before = seen.length;
    expect((await errorOf(a.fetch('openai', '/v1/models'))).code).toBe('ROUTE_DENIED');
    expect((await errorOf(a.fetch('openai', '/v1/chat/completions/../../admin', { method: 'POST', body: '{}' }))).code).toBe('ROUTE_DENIED');
    const gw = await a.gateway();
    const openai = new OpenAI({ baseURL: `${gw.url('openai')}/v1`, apiKey: gw.substitute('openai'), maxRetries: 0 });
    const err = await openai.models.list().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(403);
    expect(seen.length).toBe(before);
    expect(auditLines().filter((r) => r.decision === 'deny' && r.code === 'ROUTE_DENIED').length).toBeGreaterThanOrEqual(2);
    expect(auditLines().filter((r) => r.code === 'UNSAFE_PATH')).toHaveLength(1);
  });

  it('a body over the limit: BODY_TOO_LARGE', async () => {
    const a = await agent();
    expect((await errorOf(a.fetch('openai', '/v1/echo', { method: 'POST', body: 'x'.repeat(5000) }))).code).toBe('BODY_TOO_LARGE');
    expect(auditLines().at(-1)).toMatchObject({ decision: 'deny', code: 'BODY_TOO_LARGE', secret: 'openai' });
  });

  it('an identity over its budget: BUDGET_EXCEEDED (the budget counts calls per identity and window)', async () => {
    const a = await agent();
    for (let i = 0; i < 2; i++) expect((await a.fetch('tight', '/v1/echo', { method: 'POST', body: '{}' })).status).toBe(200);
    expect((await errorOf(a.fetch('tight', '/v1/echo', { method: 'POST', body: '{}' }))).code).toBe('BUDGET_EXCEEDED');
    // Another agent process of the same identity shares the budget.
    expect((await errorOf((await agent()).fetch('tight', '/v1/echo', { method: 'POST', body: '{}' }))).code).toBe('BUDGET_EXCEEDED');
    expect(auditLines().filter((r) => r.code === 'BUDGET_EXCEEDED')).toHaveLength(2);
  });

  it('an upstream status not on the list: UPSTREAM_STATUS_DENIED; the upstream body is not passed on', async () => {
    const a = await agent();
    const err = await errorOf(a.fetch('strict', '/v1/teapot'));
    expect(err.code).toBe('UPSTREAM_STATUS_DENIED');
    expect(err.message).not.toContain('upstream error body');
    expect(auditLines().at(-1)).toMatchObject({ decision: 'deny', code: 'UPSTREAM_STATUS_DENIED', gateway: { status: 418 } });
    // Without allowStatus the upstream's answer passes as it is.
    expect((await a.fetch('openai', '/v1/teapot')).status).toBe(418);
  });

  it('an upstream that is down: UPSTREAM_UNAVAILABLE, audited with the cause', async () => {
    const closed = createHttpsServer();
    const port = await new Promise<number>((r) => closed.listen(0, '127.0.0.1', () => r((closed.address() as AddressInfo).port)));
    await new Promise<void>((r) => closed.close(() => r()));
    await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'down', value: enc('sk-down'), allow, provider: 'local', inject: { ...inject(['GET /v1/x']), upstream: `https://127.0.0.1:${port}` } });
    const a = await agent();
    expect((await errorOf(a.fetch('down', '/v1/x'))).code).toBe('UPSTREAM_UNAVAILABLE');
    expect(auditLines().at(-1)).toMatchObject({ decision: 'deny', code: 'UPSTREAM_UNAVAILABLE:ECONNREFUSED', secret: 'down', gateway: { status: null } });
  });

  it('an upstream whose certificate does not validate gets nothing: UPSTREAM_UNAVAILABLE with the TLS error, the key is never sent', async () => {
    const impostor = await selfSigned('upstream impostor');
    let requests = 0;
    const server = createHttpsServer({ cert: impostor.certPem, key: impostor.keyPem }, (_req, res) => {
      requests++;
      res.end('{}');
    });
    const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));
    try {
      await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'impostor', value: enc('sk-impostor'), allow, provider: 'local', inject: { ...inject(['GET /v1/x']), upstream: `https://127.0.0.1:${port}` } });
      const a = await agent();
      expect((await errorOf(a.fetch('impostor', '/v1/x'))).code).toBe('UPSTREAM_UNAVAILABLE');
      expect(requests).toBe(0);
      expect(auditLines().at(-1)).toMatchObject({ decision: 'deny', code: expect.stringMatching(/^UPSTREAM_UNAVAILABLE:(DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE)$/), secret: 'impostor' });
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('a rotated key is used from the next call on, with no enclave change', async () => {
    const a = await agent();
    await (await a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' })).text();
    expect(seen.at(-1)!.authorization).toBe(`Bearer ${KEY_V1}`);
    await rotateSecret(broker.store, broker.providers, 'openai', enc(KEY_V2));
    await (await a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' })).text();
    expect(seen.at(-1)!.authorization).toBe(`Bearer ${KEY_V2}`);
    expect(auditLines().at(-1)).toMatchObject({ decision: 'call', secret: 'openai', version: 2 });
  });

  it('a key with replacement patterns ($&, $\') arrives byte for byte; one that cannot be a header value is refused (SECRET_UNAVAILABLE, audited)', async () => {
    const local = broker.providers.get('local')!;
    await bindSecret(broker.store, local, { secret: 'dollar', value: enc("sk-$&-$'-$$-x"), allow, provider: 'local', inject: inject(['POST /v1/echo']) });
    await bindSecret(broker.store, local, { secret: 'crlf', value: enc('sk-a\r\nx-evil: 1'), allow, provider: 'local', inject: inject(['POST /v1/echo']) });
    const a = await agent();
    await (await a.fetch('dollar', '/v1/echo', { method: 'POST', body: '{}' })).text();
    expect(seen.at(-1)!.authorization).toBe("Bearer sk-$&-$'-$$-x");
    const before = seen.length;
    expect((await errorOf(a.fetch('crlf', '/v1/echo', { method: 'POST', body: '{}' }))).code).toBe('SECRET_UNAVAILABLE');
    expect(seen.length).toBe(before);
    expect(auditLines().at(-1)).toMatchObject({ decision: 'deny', code: 'SECRET_UNAVAILABLE:NotAHeaderValue', secret: 'crlf' });
  });

  it('POST /v1/secrets for an inject binding: POLICY_DENIED', async () => {
    const a = await agent();
    expect((await errorOf(a.getSecret('openai'))).code).toBe('POLICY_DENIED');
  });
});

/** A TLS connection to the gateway as an attacker holding a stolen token would open one. */
async function connectGateway(): Promise<TLSSocket> {
  const socket = tlsConnect({ host: '127.0.0.1', port: gatewayPort, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  await new Promise<void>((resolve, reject) => {
    socket.once('secureConnect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

function bindingFor(socket: TLSSocket, key: KeyObject): string {
  const exporter = socket.exportKeyingMaterial(CHANNEL_BINDING_BYTES, CHANNEL_BINDING_LABEL, Buffer.alloc(0));
  return sign('sha256', Buffer.concat([Buffer.from(CHANNEL_BINDING_CONTEXT), exporter]), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }).toString('base64url');
}

function call(socket: TLSSocket, path: string, headers: Record<string, string>): Promise<{ status: number; code: string | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port: gatewayPort, method: 'POST', path, headers: { ...headers, 'content-length': '2', connection: 'keep-alive' }, createConnection: () => socket });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, code: (JSON.parse(Buffer.concat(chunks).toString() || '{}') as { error?: { code: string } }).error?.code }));
    });
    req.on('error', reject);
    req.end('{}');
  });
}

async function jsonOver(socket: TLSSocket, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    const req = httpsRequest({ host: '127.0.0.1', port: gatewayPort, method, path, headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), connection: 'keep-alive' }, createConnection: () => socket });
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>));
    });
    req.on('error', reject);
    req.end(text);
  });
}

describe('a stolen or replayed gateway token', () => {
  it('is useless without the attested key: on another connection, with a replayed binding, or a binding by another key', async () => {
    // The thief's position: a token issued to the enclave key K (obtained here the way the agent does).
    const k = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const spki = new Uint8Array(k.publicKey.export({ format: 'der', type: 'spki' }));
    const first = await connectGateway();
    const challenge = await jsonOver(first, 'GET', '/v1/gateway/challenge');
    const doc = await simulator.client().attest({ nonce: Buffer.from(challenge.nonce as string, 'base64'), publicKey: spki });
    const answer = await jsonOver(first, 'POST', '/v1/gateway/token', { attestation: Buffer.from(doc).toString('base64'), name: 'openai' });
    const token = answer.token as string;
    expect(answer.ttlSeconds).toBe(30); // at most the binding's TTL
    // The attestation cannot be replayed for a second token: its challenge is single use.
    const again = await jsonOver(first, 'POST', '/v1/gateway/token', { attestation: Buffer.from(doc).toString('base64'), name: 'openai' });
    expect((again.error as { code: string }).code).toBe('NONCE_MISMATCH');
    const path = `${GATEWAY_CALL_PREFIX}openai/v1/echo`;
    const replayedBinding = bindingFor(first, k.privateKey);
    first.destroy();

    const before = seen.length;
    const second = await connectGateway();
    expect(await call(second, path, { [GATEWAY_TOKEN_HEADER]: token })).toEqual({ status: 401, code: 'CHANNEL_BINDING_INVALID' });
    expect(await call(second, path, { [GATEWAY_TOKEN_HEADER]: token, [CHANNEL_BINDING_HEADER]: replayedBinding })).toEqual({ status: 401, code: 'CHANNEL_BINDING_INVALID' });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect(await call(second, path, { [GATEWAY_TOKEN_HEADER]: token, [CHANNEL_BINDING_HEADER]: bindingFor(second, other.privateKey) })).toEqual({ status: 401, code: 'CHANNEL_BINDING_INVALID' });
    // A forged or altered token, and a token for another credential.
    expect(await call(second, path, { [GATEWAY_TOKEN_HEADER]: `${token.slice(0, -4)}AAAA`, [CHANNEL_BINDING_HEADER]: bindingFor(second, k.privateKey) })).toEqual({ status: 401, code: 'GATEWAY_TOKEN_INVALID' });
    expect(seen.length).toBe(before);
    // Control: the holder of K, on this very connection, is served.
    expect(await call(second, path, { [GATEWAY_TOKEN_HEADER]: token, [CHANNEL_BINDING_HEADER]: bindingFor(second, k.privateKey) })).toMatchObject({ status: 200 });
    expect(await call(second, `${GATEWAY_CALL_PREFIX}tight/v1/echo`, { [GATEWAY_TOKEN_HEADER]: token })).toEqual({ status: 401, code: 'GATEWAY_TOKEN_INVALID' });
    second.destroy();
    expect(seen.length).toBe(before + 1);
    expect(auditLines().filter((r) => r.code === 'CHANNEL_BINDING_INVALID').length).toBeGreaterThanOrEqual(1);
  });
});

describe('revocation', () => {
  it('revoking the identity stops calls at once: REVOKED', async () => {
    const a = await agent();
    expect((await a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' })).status).toBe(200);
    await revokeIdentities(broker.store, { pcr0: [simulator.pcrs[0]!] });
    const before = seen.length;
    expect((await errorOf(a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' }))).code).toBe('REVOKED');
    expect(seen.length).toBe(before);
    expect(auditLines().at(-1)).toMatchObject({ decision: 'deny', code: 'REVOKED', secret: 'openai' });
  });
});
