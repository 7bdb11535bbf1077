/**
 * The broker's log: one JSON object per line (pino), one request line per HTTP request on both
 * listeners, a start-up summary of what it trusts and a shutdown line; never a secret value,
 * an admin token or attestation bytes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, createPublicKey, randomUUID, X509Certificate } from 'node:crypto';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import { startBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { createLogger, effectiveLogLevel } from '../../broker/log.js';
import { adminKeyId, mintAdminToken } from '../../broker/admin-api/token.js';
import { NO_RATE_LIMITS } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave } from '../support/enclave.js';
import { BIN } from '../support/cli.js';

let dir: string;
let pki: TestPki;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keygate-logging-'));
  pki = await createTestPki(Date.now());
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Line = Record<string, unknown> & { level: string; time: string; message: string };

/** Every line parsed as JSON (a line that is not one fails the test), with the basic shape checked. */
function parseLines(text: string): Line[] {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const line = JSON.parse(l) as Line;
      expect(line, l).toMatchObject({ level: expect.stringMatching(/^(debug|info|warn|error)$/), message: expect.any(String) });
      expect(new Date(line.time).toISOString()).toBe(line.time);
      return line;
    });
}

/** Every way a value could appear in text: as is, base64, base64url, hex. */
const forms = (v: string): string[] => [v, Buffer.from(v).toString('base64').replace(/=+$/, ''), Buffer.from(v).toString('base64url'), Buffer.from(v).toString('hex')];

describe('broker log (in-process, captured destination)', () => {
  it('writes a JSON request line per request on both listeners, a start-up summary and a shutdown line; no value, token or document', async () => {
    let text = '';
    const log = createLogger({ level: 'info', destination: { write: (s: string) => void (text += s) } });
    const adminKey = generateKeyPairSync('ed25519').privateKey;
    const adminPub = join(dir, 'admin-api.pub.jwk');
    await writeFile(adminPub, JSON.stringify(await exportJWK(createPublicKey(adminKey))));
    const config = resolveConfig({
      listen: '127.0.0.1:0',
      adminListen: '127.0.0.1:0',
      adminApiKeys: [adminPub],
      store: join(dir, 'inproc', 'store'),
      stateDir: join(dir, 'inproc', 'state'),
      extraRootPems: [pki.root.pem],
      rateLimits: NO_RATE_LIMITS,
    });
    const broker = await startBroker(config, { log });
    const VALUE = `log-test-value-${randomUUID()}`;
    const mint = (scope: 'secrets:write' | 'secrets:read'): Promise<string> =>
      mintAdminToken({ key: adminKey, scopes: [scope], audience: 'keygate-admin', ttlSeconds: 60, now: Date.now(), jti: randomUUID() });
    const tokens: string[] = [];
    let attestation = '';
    try {
      // Admin listener: a bind carrying the value, a list, and a replayed token.
      const bindToken = await mint('secrets:write');
      tokens.push(bindToken);
      const bind = await fetch(`${broker.adminUrl}/v1/admin/secrets/db-password`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${bindToken}`, 'content-type': 'application/json' },
        body: JSON.stringify({ value: { text: VALUE }, allow: [{ pcrs: APPROVED }], provider: 'local' }),
      });
      expect(bind.status).toBe(200);
      const listToken = await mint('secrets:read');
      tokens.push(listToken);
      const queried = await fetch(`${broker.adminUrl}/v1/admin/secrets?x=${VALUE}`, { headers: { authorization: `Bearer ${listToken}` } });
      expect(queried.status).toBe(400); // query strings are refused (and never logged)
      const listAgain = await mint('secrets:read');
      tokens.push(listAgain);
      expect((await fetch(`${broker.adminUrl}/v1/admin/secrets`, { headers: { authorization: `Bearer ${listAgain}` } })).status).toBe(200);
      expect((await fetch(`${broker.adminUrl}/v1/admin/secrets`, { headers: { authorization: `Bearer ${listAgain}` } })).status).toBe(401); // replayed
      // Public listener: a release, a denial, an unknown route, a probe.
      const enclave = new TestEnclave(pki, broker.url);
      const doc = enclave.document(await enclave.challenge());
      attestation = Buffer.from(doc).toString('base64');
      const released = await enclave.post(doc, ['db-password']);
      expect(released.status).toBe(200);
      const claims = await enclave.open(released.body.secrets![0]!, broker.signingKey.publicJwk);
      expect(Buffer.from(claims.val, 'base64url').toString()).toBe(VALUE); // really released, so it could have leaked
      expect((await enclave.request(['no-such-secret'])).body.error?.code).toBe('POLICY_DENIED');
      expect((await fetch(`${broker.url}/v1/nowhere/${VALUE}`)).status).toBe(404);
      expect((await fetch(`${broker.url}/healthz`)).status).toBe(200);
    } finally {
      await broker.close();
    }

    const lines = parseLines(text);
    const requests = lines.filter((l) => l.message === 'request');
    const shape = (l: Line): unknown[] => [l.listener, l.method, l.route, l.status, l.code];
    expect(requests.map(shape)).toEqual([
      ['admin', 'PUT', '/v1/admin/secrets/:name', 200, null],
      ['admin', 'GET', '/v1/admin/secrets', 400, 'BAD_REQUEST'],
      ['admin', 'GET', '/v1/admin/secrets', 200, null],
      ['admin', 'GET', '/v1/admin/secrets', 401, 'UNAUTHORIZED'],
      ['api', 'GET', '/v1/challenge', 200, null],
      ['api', 'POST', '/v1/secrets', 200, null],
      ['api', 'GET', '/v1/challenge', 200, null],
      ['api', 'POST', '/v1/secrets', 403, 'POLICY_DENIED'],
      ['api', 'GET', null, 404, 'NOT_FOUND'],
      ['api', 'GET', '/healthz', 200, null],
    ]);
    for (const r of requests) {
      expect(r.client).toBe('127.0.0.1');
      expect(typeof r.latencyMs === 'number' && r.latencyMs >= 0).toBe(true);
      expect(r.level).toBe('info');
    }

    const started = lines.find((l) => l.message === 'keygate broker started')!;
    const testRoot = new X509Certificate(pki.root.pem).fingerprint256.replace(/:/g, '').toLowerCase();
    expect(started).toMatchObject({
      listen: broker.url,
      adminListen: broker.adminUrl,
      store: { kind: 'file', dir: config.store },
      audit: { kind: 'file', file: join(dir, 'inproc', 'state', 'audit.jsonl') },
      dev: false,
      approvalsRequired: 1,
      adminKeys: [],
      adminApiKeys: [{ file: adminPub, kid: await adminKeyId(createPublicKey(adminKey)) }],
      warnings: [expect.stringMatching(/^NON-AWS ROOTS ARE TRUSTED \(1\)/)],
    });
    expect((started.roots as Array<{ sha256: string }>).map((r) => r.sha256)).toEqual([expect.stringMatching(/^[0-9a-f]{64}$/), testRoot]);
    expect(lines.indexOf(started)).toBeLessThan(lines.indexOf(requests[0]!));
    const stopped = lines.at(-1)!;
    expect(stopped).toMatchObject({ level: 'info', message: 'keygate broker stopped', url: broker.url, uptimeSeconds: expect.any(Number) });

    for (const form of forms(VALUE)) expect(text).not.toContain(form);
    for (const token of tokens) {
      expect(text).not.toContain(token);
      expect(text).not.toContain(token.split('.')[2]!); // not even its signature
    }
    expect(text).not.toContain(attestation.slice(0, 64));
    expect(text).not.toContain('db-password'); // /v1/secrets names and admin paths stay out of request lines
  }, 120_000);

  it('censors fields that must never be logged, should a call site pass one', () => {
    let text = '';
    const log = createLogger({ destination: { write: (s: string) => void (text += s) } });
    log('info', 'oops', { value: 'v-123', token: 't-456', attestation: 'a-789', secret: 'name-ok' });
    expect(JSON.parse(text)).toMatchObject({ value: '[redacted]', token: '[redacted]', attestation: '[redacted]', secret: 'name-ok' });
  });

  it('filters by level: warn drops info lines', () => {
    let text = '';
    const log = createLogger({ level: 'warn', destination: { write: (s: string) => void (text += s) } });
    log('info', 'hidden');
    log('warn', 'shown');
    log('error', 'shown too');
    expect(parseLines(text).map((l) => [l.level, l.message])).toEqual([['warn', 'shown'], ['error', 'shown too']]);
  });

  it('KEYGATE_LOG_LEVEL overrides the configured logLevel; a bad one is CONFIG_INVALID', () => {
    expect(effectiveLogLevel(undefined, {})).toBe('info');
    expect(effectiveLogLevel('warn', {})).toBe('warn');
    expect(effectiveLogLevel('warn', { KEYGATE_LOG_LEVEL: 'debug' })).toBe('debug');
    expect(() => effectiveLogLevel('info', { KEYGATE_LOG_LEVEL: 'loud' })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
    expect(() => resolveConfig({ logLevel: 'loud' as never })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID' }));
  });
});

/** A real `keygate broker` process: its stderr, and a way to stop it with SIGTERM. */
function brokerProcess(args: string[], env: NodeJS.ProcessEnv, cwd: string): { url: Promise<string>; stderr: () => string; exit: Promise<number | null>; stop: () => void } {
  const child = spawn(process.execPath, [BIN, 'broker', ...args], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const url = new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    void exit.then((code) => reject(new Error(`broker exited (${code}) before listening: ${err}`)));
  });
  return { url, stderr: () => err, exit, stop: () => void child.kill('SIGTERM') };
}

describe('keygate broker log (real process)', () => {
  it('every stderr line is JSON: start-up summary, request lines, shutdown line; KEYGATE_LOG_LEVEL=warn keeps only warnings', async () => {
    const cwd = join(dir, 'proc');
    await mkdir(cwd, { recursive: true });
    const b = brokerProcess(['--dev', '--listen', '127.0.0.1:0'], {}, cwd);
    const url = await b.url;
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/v1/secrets`)).status).toBe(405);
    b.stop();
    expect(await b.exit).toBe(0);
    const lines = parseLines(b.stderr());
    expect(lines.find((l) => l.message === 'keygate broker started')).toMatchObject({ listen: url, dev: true, warnings: expect.arrayContaining([expect.stringMatching(/^DEVELOPMENT MODE/)]) });
    expect(lines.filter((l) => l.message === 'request').map((l) => [l.route, l.status, l.code, l.client])).toEqual([
      ['/healthz', 200, null, '127.0.0.1'],
      ['/v1/secrets', 405, 'METHOD_NOT_ALLOWED', '127.0.0.1'],
    ]);
    expect(lines.at(-1)).toMatchObject({ message: 'keygate broker stopped', url });

    const quiet = brokerProcess(['--dev', '--listen', '127.0.0.1:0'], { KEYGATE_LOG_LEVEL: 'warn' }, cwd);
    const quietUrl = await quiet.url;
    expect((await fetch(`${quietUrl}/healthz`)).status).toBe(200);
    quiet.stop();
    expect(await quiet.exit).toBe(0);
    const quietLines = parseLines(quiet.stderr());
    expect(quietLines.length).toBeGreaterThan(0);
    expect(quietLines.every((l) => l.level === 'warn' || l.level === 'error')).toBe(true);
    expect(quietLines.map((l) => l.message)).toContain('DEVELOPMENT MODE: the NSM simulator root is trusted; not for production secrets');
  }, 120_000);

  it('a bad KEYGATE_LOG_LEVEL is a usage error naming it, not an internal error', async () => {
    const cwd = join(dir, 'proc-bad');
    await mkdir(cwd, { recursive: true });
    const b = brokerProcess(['--dev', '--listen', '127.0.0.1:0'], { KEYGATE_LOG_LEVEL: 'loud' }, cwd);
    b.url.catch(() => undefined);
    // Bounded: a broker that started anyway is stopped, never left behind.
    const status = await Promise.race([b.exit, new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 40_000).unref())]);
    if (status === 'still running') b.stop();
    expect(status).toBe(2);
    expect(b.stderr()).toContain('KEYGATE_LOG_LEVEL="loud" is not a log level');
    expect(b.stderr()).not.toContain('internal error');
  }, 60_000);
});
