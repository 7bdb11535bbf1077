import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT, UnsecuredJWT } from 'jose';
import { createBroker, type Broker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { adminKeyId, mintAdminToken, ADMIN_TOKEN_TYPE, type AdminScope } from '../../broker/admin-api/token.js';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { approveBaseline, type Baseline } from '../../broker/policy/baseline.js';
import type { Logger } from '../../broker/log.js';
import { startTestBroker } from '../support/broker.js';
import { openAdminBroker, writeAdminKeys, writeJwk } from '../support/admin-broker.js';
import { createAdminApp } from '../../broker/admin-api/app.js';
import { adminApiKey } from '../../broker/admin-api/token.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { MemoryNonceRegistry } from '../../broker/nonce/memory-registry.js';
import type { AdminRecord, AuditSink } from '../../broker/audit/sink.js';

const PCR = (c: string): string => c.repeat(96);
const SECRET_TEXT = 'hunter2-admin-api-value-7f3c';
const ROTATED_TEXT = 'rotated-admin-api-value-91ab';

let dir: string;
let broker: Broker;
let apiKey: KeyObject;
let approverKey: KeyObject;
let logLines: string[];
let now: number;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keygate-adminapi-'));
  ({ apiKey, approverKey } = await writeAdminKeys(dir));
  logLines = [];
  const log: Logger = (level, message, fields) => void logLines.push(JSON.stringify({ level, message, fields }));
  now = Date.now();
  broker = await openAdminBroker(dir, { log, clock: () => now });
});

afterEach(async () => {
  await broker.close();
  await rm(dir, { recursive: true, force: true });
});

async function token(scopes: AdminScope[], extra: { key?: KeyObject; aud?: string; ttl?: number; at?: number } = {}): Promise<string> {
  return mintAdminToken({ key: extra.key ?? apiKey, scopes, audience: extra.aud ?? 'keygate-admin', ttlSeconds: extra.ttl ?? 60, now: extra.at ?? now, jti: randomUUID() });
}

async function call(method: string, path: string, tok: string | undefined, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await broker.adminApp!.request(path, {
    method,
    headers: { ...(tok ? { authorization: `Bearer ${tok}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const bindBody = (text = SECRET_TEXT) => ({ value: { text }, allow: [{ pcrs: { 0: PCR('a'), 1: PCR('b'), 2: PCR('c') } }] });

function code(r: { json: Record<string, unknown> }): unknown {
  return (r.json.error as { code?: unknown } | undefined)?.code;
}
function reason(r: { json: Record<string, unknown> }): unknown {
  return (r.json.error as { reason?: unknown } | undefined)?.reason;
}

async function auditRecords(): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(join(dir, 'state', 'audit.jsonl'), 'utf8');
  return text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.type === 'admin');
}

describe('admin API: operations, each audited', () => {
  it('bind, rotate, revoke, unrevoke, list, unbind, identity revocations, baseline put/approve, audit head: each works and is one audit record without the value', async () => {
    const kid = await adminKeyId(apiKey);
    let r = await call('PUT', '/v1/admin/secrets/db-pass', await token(['secrets:write']), bindBody());
    expect(r.status).toBe(200);
    expect((r.json.binding as { version: number }).version).toBe(1);
    r = await call('POST', '/v1/admin/secrets/db-pass/rotate', await token(['secrets:write']), { value: { base64: Buffer.from(ROTATED_TEXT).toString('base64') } });
    expect(r.status).toBe(200);
    expect(r.json.version).toBe(2);
    r = await call('POST', '/v1/admin/secrets/db-pass/revoke', await token(['revocations:write']));
    expect(r.status).toBe(200);
    expect(broker.store.snapshot().bindings.get('db-pass')!.revoked).toBe(true);
    r = await call('POST', '/v1/admin/secrets/db-pass/unrevoke', await token(['revocations:write']));
    expect(r.status).toBe(200);
    expect(broker.store.snapshot().bindings.get('db-pass')!.revoked).toBe(false);
    r = await call('POST', '/v1/admin/revocations', await token(['revocations:write']), { pcr0: [PCR('d')], instances: ['i-0123456789abcdef0'] });
    expect(r.status).toBe(200);
    r = await call('POST', '/v1/admin/revocations/remove', await token(['revocations:write']), { instances: ['i-0123456789abcdef0'] });
    expect(r.status).toBe(200);
    expect(broker.store.snapshot().revocations).toMatchObject({ pcr0: [PCR('d')], instances: [] });
    r = await call('GET', '/v1/admin/secrets', await token(['secrets:read']));
    expect(r.status).toBe(200);
    expect((r.json.bindings as Array<{ secret: string; version: number; ciphertext?: string }>).map((b) => [b.secret, b.version, b.ciphertext])).toEqual([['db-pass', 2, undefined]]);

    const baseline: Baseline = {
      formatVersion: 1,
      name: 'web-1',
      pcrs: { 0: PCR('1'), 1: PCR('2'), 2: PCR('3') },
      builder: 'ci',
      createdAt: new Date(now).toISOString(),
      source: 'nitro-cli',
      approvals: [],
    };
    r = await call('PUT', '/v1/admin/baselines/web-1', await token(['baselines:approve']), baseline);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const approval = await approveBaseline(broker.store.snapshot().baselines.get('web-1')!, approverKey, new Date(now));
    r = await call('POST', '/v1/admin/baselines/web-1/approvals', await token(['baselines:approve']), approval);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(broker.store.snapshot().baselines.get('web-1')!.approvals.map((a) => a.kid)).toEqual([approval.kid]);
    // An approval by a key that is not a configured approver is refused, and not stored.
    const stranger = await approveBaseline(broker.store.snapshot().baselines.get('web-1')!, generateKeyPairSync('ed25519').privateKey, new Date(now));
    r = await call('POST', '/v1/admin/baselines/web-1/approvals', await token(['baselines:approve']), stranger);
    expect(r.status).toBe(400);
    expect(code(r)).toBe('BAD_REQUEST');

    r = await call('GET', '/v1/admin/audit/head', await token(['audit:read']));
    expect(r.status).toBe(200);
    expect(r.json.seq).toEqual(expect.any(Number));
    r = await call('DELETE', '/v1/admin/secrets/db-pass', await token(['secrets:write']));
    expect(r.status).toBe(200);
    expect(broker.store.snapshot().bindings.has('db-pass')).toBe(false);

    const all = await auditRecords();
    // Every change is announced before it is made: a pending record, then its outcome.
    const changes = ['bind', 'rotate', 'revoke-secret', 'unrevoke-secret', 'revoke-identities', 'unrevoke-identities', 'baseline-put', 'baseline-approve', 'baseline-approve', 'unbind'];
    expect(all.filter((x) => x.outcome === 'pending').map((x) => x.action)).toEqual(changes);
    for (const [i, x] of all.entries()) if (x.outcome === 'pending') expect([all[i + 1]!.action, all[i + 1]!.jti]).toEqual([x.action, x.jti]);
    const records = all.filter((x) => x.outcome !== 'pending');
    expect(records.map((x) => [x.action, x.outcome, x.secret, x.versionBefore, x.versionAfter])).toEqual([
      ['bind', 'ok', 'db-pass', null, 1],
      ['rotate', 'ok', 'db-pass', 1, 2],
      ['revoke-secret', 'ok', 'db-pass', 2, 2],
      ['unrevoke-secret', 'ok', 'db-pass', 2, 2],
      ['revoke-identities', 'ok', null, null, null],
      ['unrevoke-identities', 'ok', null, null, null],
      ['list', 'ok', null, null, null],
      ['baseline-put', 'ok', null, null, null],
      ['baseline-approve', 'ok', null, null, null],
      ['baseline-approve', 'BAD_REQUEST', null, null, null],
      ['audit-head', 'ok', null, null, null],
      ['unbind', 'ok', 'db-pass', 2, null],
    ]);
    for (const x of records) expect(x.kid).toBe(kid);
    expect(new Set(records.map((x) => x.jti)).size).toBe(records.length);
    // Values never reach the audit or the log, in any encoding.
    await broker.audit.close();
    const audit = await readFile(join(dir, 'state', 'audit.jsonl'), 'utf8');
    for (const v of [SECRET_TEXT, ROTATED_TEXT]) {
      for (const enc of [v, Buffer.from(v).toString('base64'), Buffer.from(v).toString('hex')]) {
        expect(audit).not.toContain(enc);
        expect(logLines.join('\n')).not.toContain(enc);
      }
    }
    // The audit verifier knows the admin record type.
    const verified = verifyAuditLog(audit, broker.signingKey.publicKey);
    expect(verified.problem).toBeUndefined();
    expect(verified.ok).toBe(true);
    expect(verified.adminActions).toBe(22);
  });

  it('an operation refused by the store is audited with its code, and answered with its status', async () => {
    const r = await call('POST', '/v1/admin/secrets/nope/unrevoke', await token(['revocations:write']));
    expect(r.status).toBe(404);
    expect(code(r)).toBe('NOT_BOUND');
    expect((await auditRecords()).map((x) => [x.action, x.outcome, x.secret])).toEqual([
      ['unrevoke-secret', 'pending', 'nope'],
      ['unrevoke-secret', 'NOT_BOUND', 'nope'],
    ]);
  });
});

describe('admin API: tokens', () => {
  const routes: Array<[AdminScope, string, string, unknown?]> = [
    ['secrets:write', 'PUT', '/v1/admin/secrets/s1', bindBody()],
    ['secrets:write', 'POST', '/v1/admin/secrets/s1/rotate', { value: { text: 'x' } }],
    ['secrets:write', 'DELETE', '/v1/admin/secrets/s1'],
    ['revocations:write', 'POST', '/v1/admin/secrets/s1/revoke'],
    ['revocations:write', 'POST', '/v1/admin/secrets/s1/unrevoke'],
    ['revocations:write', 'POST', '/v1/admin/revocations', { pcr0: [PCR('e')] }],
    ['revocations:write', 'POST', '/v1/admin/revocations/remove', { pcr0: [PCR('e')] }],
    ['secrets:read', 'GET', '/v1/admin/secrets'],
    ['baselines:approve', 'PUT', '/v1/admin/baselines/b1', {}],
    ['baselines:approve', 'POST', '/v1/admin/baselines/b1/approvals', {}],
    ['audit:read', 'GET', '/v1/admin/audit/head'],
  ];

  it.each(routes)('scope %s is required for %s %s (FORBIDDEN 403 with every other scope; nothing changed)', async (scope, method, path, body) => {
    const others = (['secrets:read', 'secrets:write', 'revocations:write', 'baselines:approve', 'audit:read'] as AdminScope[]).filter((s) => s !== scope);
    const r = await call(method, path, await token(others), body);
    expect(r.status).toBe(403);
    expect(code(r)).toBe('FORBIDDEN');
    expect(reason(r)).toBe('SCOPE_MISSING');
    const ok = await call(method, path, await token([scope]), body);
    expect(ok.status).not.toBe(403);
    expect(ok.status).not.toBe(401);
  });

  it('no token, expired, replayed, wrong audience, wrong key, too long-lived, alg none and HS256 tokens are refused with exact codes', async () => {
    const path = '/v1/admin/secrets';
    const expectRefused = async (tok: string | undefined, why: string, status = 401, c = 'UNAUTHORIZED'): Promise<void> => {
      const r = await call('GET', path, tok);
      expect([r.status, code(r), reason(r)]).toEqual([status, c, why]);
    };
    await expectRefused(undefined, 'TOKEN_MISSING');
    await expectRefused(await token(['secrets:read'], { at: now - 120_000, ttl: 60 }), 'TOKEN_EXPIRED');
    const once = await token(['secrets:read']);
    expect((await call('GET', path, once)).status).toBe(200);
    await expectRefused(once, 'TOKEN_REPLAYED');
    await expectRefused(await token(['secrets:read'], { aud: 'keygate-other' }), 'TOKEN_AUDIENCE');
    await expectRefused(await token(['secrets:read'], { key: generateKeyPairSync('ed25519').privateKey }), 'TOKEN_UNKNOWN_KEY');
    // A token naming the configured key's kid but signed by another key.
    const kid = await adminKeyId(apiKey);
    const iat = Math.floor(now / 1000);
    const forged = await new SignJWT({ scope: 'secrets:read' })
      .setProtectedHeader({ alg: 'EdDSA', kid, typ: ADMIN_TOKEN_TYPE })
      .setAudience('keygate-admin').setIssuedAt(iat).setExpirationTime(iat + 60).setJti(randomUUID())
      .sign(generateKeyPairSync('ed25519').privateKey);
    await expectRefused(forged, 'TOKEN_SIGNATURE');
    const long = await new SignJWT({ scope: 'secrets:read' })
      .setProtectedHeader({ alg: 'EdDSA', kid, typ: ADMIN_TOKEN_TYPE })
      .setAudience('keygate-admin').setIssuedAt(iat).setExpirationTime(iat + 301).setJti(randomUUID())
      .sign(apiKey);
    await expectRefused(long, 'TOKEN_LIFETIME');
    const none = new UnsecuredJWT({ scope: 'secrets:read' }).setAudience('keygate-admin').setIssuedAt(iat).setExpirationTime(iat + 60).setJti(randomUUID()).encode();
    await expectRefused(none, 'TOKEN_ALG');
    const hs = await new SignJWT({ scope: 'secrets:read' })
      .setProtectedHeader({ alg: 'HS256', kid, typ: ADMIN_TOKEN_TYPE })
      .setAudience('keygate-admin').setIssuedAt(iat).setExpirationTime(iat + 60).setJti(randomUUID())
      .sign(new TextEncoder().encode('a-shared-secret-of-enough-length-000'));
    await expectRefused(hs, 'TOKEN_ALG');
    const noTyp = await new SignJWT({ scope: 'secrets:read' })
      .setProtectedHeader({ alg: 'EdDSA', kid })
      .setAudience('keygate-admin').setIssuedAt(iat).setExpirationTime(iat + 60).setJti(randomUUID())
      .sign(apiKey);
    await expectRefused(noTyp, 'TOKEN_TYPE');
    // Refused tokens change nothing and are not admin actions in the audit.
    expect(await auditRecords()).toHaveLength(1);
  });

  it('a value never travels in the URL: a body too large is refused with 413', async () => {
    const big = { value: { text: 'x'.repeat(70 * 1024) }, allow: [] };
    const r = await call('PUT', '/v1/admin/secrets/s1', await token(['secrets:write']), big);
    expect([r.status, code(r)]).toEqual([413, 'PAYLOAD_TOO_LARGE']);
  });

  it('accepts ES256 keys too', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    await broker.close();
    await writeJwk(join(dir, 'ec.pub.jwk'), (await import('node:crypto')).createPublicKey(ec));
    broker = await createBroker(
      resolveConfig({ listen: '127.0.0.1:0', adminListen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), adminApiKeys: [join(dir, 'ec.pub.jwk')] }),
      { log: () => {}, clock: () => now },
    );
    const r = await call('GET', '/v1/admin/secrets', await token(['secrets:read'], { key: ec }));
    expect(r.status).toBe(200);
  });
});

describe('admin API: its own listener', () => {
  it('is served on adminListen only; the public port answers 404 for /v1/admin', async () => {
    const running = await startTestBroker(join(dir, 'real'), [], {
      adminListen: '127.0.0.1:0',
      adminApiKeys: [join(dir, 'api.pub.jwk')],
    });
    try {
      expect(running.adminUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(running.adminUrl).not.toBe(running.url);
      const tok = await mintAdminToken({ key: apiKey, scopes: ['secrets:read'], audience: 'keygate-admin', ttlSeconds: 60, now: Date.now(), jti: randomUUID() });
      const onAdmin = await fetch(`${running.adminUrl}/v1/admin/secrets`, { headers: { authorization: `Bearer ${tok}` } });
      expect(onAdmin.status).toBe(200);
      const tok2 = await mintAdminToken({ key: apiKey, scopes: ['secrets:read'], audience: 'keygate-admin', ttlSeconds: 60, now: Date.now(), jti: randomUUID() });
      const onPublic = await fetch(`${running.url}/v1/admin/secrets`, { headers: { authorization: `Bearer ${tok2}` } });
      expect(onPublic.status).toBe(404);
      expect(((await onPublic.json()) as { error: { code: string } }).error.code).toBe('NOT_FOUND');
      // And the admin listener serves nothing of the public API.
      expect((await fetch(`${running.adminUrl}/v1/challenge`)).status).toBe(404);
    } finally {
      await running.close();
    }
  });
});

describe('admin API: the audit fails closed', () => {
  async function appWith(audit: AuditSink) {
    const store = await FileStore.open(join(dir, 'store2'));
    const local = await LocalKeyProvider.open(join(dir, 'state2', 'local-provider.key'));
    const app = createAdminApp({
      store,
      providers: new Map([['local', local]]),
      audit,
      keys: [await adminApiKey((await import('node:crypto')).createPublicKey(apiKey))],
      approverKeys: [],
      audience: 'keygate-admin',
      replay: new MemoryNonceRegistry(),
      maxBodyBytes: 64 * 1024,
      clock: () => now,
      log: () => {},
    });
    return { app, store };
  }
  const sink = (over: Partial<AuditSink>): AuditSink => ({ append: async () => {}, appendRefusal: async () => {}, appendAdmin: async () => {}, healthy: true, close: async () => {}, ...over });

  it('an unhealthy audit log: 503 AUDIT_UNAVAILABLE and nothing is done', async () => {
    const { app, store } = await appWith(sink({ healthy: false }));
    const res = await app.request('/v1/admin/secrets/s9', { method: 'PUT', headers: { authorization: `Bearer ${await token(['secrets:write'])}`, 'content-type': 'application/json' }, body: JSON.stringify(bindBody()) });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('AUDIT_UNAVAILABLE');
    expect((await store.refresh()).bindings.has('s9')).toBe(false);
    store.close();
  });

  it('an intent that cannot be audited: 503 AUDIT_UNAVAILABLE and nothing is done', async () => {
    const { app, store } = await appWith(sink({ appendAdmin: () => Promise.reject(new Error('disk full')) }));
    const res = await app.request('/v1/admin/secrets/s9', { method: 'PUT', headers: { authorization: `Bearer ${await token(['secrets:write'])}`, 'content-type': 'application/json' }, body: JSON.stringify(bindBody()) });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('AUDIT_UNAVAILABLE');
    expect((await store.refresh()).bindings.has('s9')).toBe(false);
    store.close();
  });

  it('an outcome record that cannot be written: the caller is told 503 AUDIT_UNAVAILABLE (never a 200 without its record); the intent was durable first', async () => {
    const seen: AdminRecord[] = [];
    const { app, store } = await appWith(sink({ appendAdmin: async (r) => { seen.push(r); if (r.outcome !== 'pending') throw new Error('disk full'); } }));
    const res = await app.request('/v1/admin/secrets/s9', { method: 'PUT', headers: { authorization: `Bearer ${await token(['secrets:write'])}`, 'content-type': 'application/json' }, body: JSON.stringify(bindBody()) });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('AUDIT_UNAVAILABLE');
    expect(seen.map((r) => [r.action, r.outcome, r.versionAfter])).toEqual([['bind', 'pending', null], ['bind', 'ok', 1]]);
    expect(JSON.stringify(seen)).not.toContain(SECRET_TEXT);
    store.close();
  });
});
