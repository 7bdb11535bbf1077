/**
 * The real broker on 127.0.0.1: documents minted by a test PKI (trusted as an
 * extra root for tests only), the real AWS SDK against the local KMS-protocol
 * server, real files for the store and audit log.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { KeyObject, generateKeyPairSync, randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { SubjectAlternativeNameExtension } from '@peculiar/x509';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { bindSecret, pcrSet, revokeIdentities, revokeSecret, rotateSecret } from '../../broker/admin.js';
import { FileStore } from '../../broker/store/file-store.js';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { silentLogger } from '../../broker/log.js';
import { encode } from 'cbor-x';
import { createTestPki, defaultSpecs, issue, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, buildPcrs, h, valueOf } from '../support/enclave.js';
import { NO_RATE_LIMITS } from '../support/broker.js';
import type { KmsTestServer } from '../support/kms-server.js';
import { startKmsBroker, type KmsBroker } from '../support/kms-broker.js';

let dir: string;
let pki: TestPki;
let other: TestPki;
let kms: KmsTestServer;
let broker: RunningBroker;
let brokerJwk: JWK;
let enclave: TestEnclave;
let running: KmsBroker | undefined;
/** A second store handle on the same directory: what the CLI on another host would use. */
let admin: FileStore;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-broker-'));
  const at = Date.now();
  [pki, other] = await Promise.all([createTestPki(at), createTestPki(at)]);
  running = await startKmsBroker(dir, pki, {}, { secretCacheTtlSeconds: 60 });
  ({ kms, broker, brokerJwk, enclave } = running);
  admin = await FileStore.open(join(dir, 'store'));
  const local = broker.providers.get('local')!;
  await bindSecret(admin, local, { secret: 'db-password', value: enc('hunter2'), allow: [pcrSet(APPROVED)], provider: 'local', ttlSeconds: 120 });
  await bindSecret(admin, local, { secret: 'api-key', value: enc('ak-123'), allow: [pcrSet(APPROVED)], provider: 'local' });
  await bindSecret(admin, local, { secret: 'other-app', value: enc('nope'), allow: [pcrSet({ ...APPROVED, 0: h(0x99) })], provider: 'local' });
  await bindSecret(admin, broker.providers.get('aws-kms')!, { secret: 'kms-secret', value: enc('from-kms'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: kms.keyId });
});

afterAll(async () => {
  await running?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('release', () => {
  it('releases several secrets in one request, each a JWE only the enclave can open, signed by the broker', async () => {
    const nonce = await enclave.challenge();
    const document = enclave.document(nonce);
    const res = await enclave.post(document, ['db-password', 'api-key']);
    expect(res.status).toBe(200);
    const items = res.body.secrets!;
    expect(items.map((i) => [i.name, i.version, i.ttlSeconds])).toEqual([['db-password', 1, 120], ['api-key', 1, 60]]);
    const claims = await Promise.all(items.map((i) => enclave.open(i, brokerJwk)));
    expect(claims.map(valueOf)).toEqual(['hunter2', 'ak-123']);
    expect(claims[0]!.nonce).toBe(Buffer.from(nonce).toString('hex'));
    expect(claims[0]!.aud).toMatch(/^i-/);
    expect(claims[0]!.exp - claims[0]!.iat).toBe(120);
    expect(claims[0]!.text).toBe(true);
    // Another key cannot open it.
    const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    await expect(enclave.open(items[0]!, brokerJwk, stranger)).rejects.toThrow();
    // A JWS under another broker key is refused.
    const fakeBroker = { ...brokerJwk, x: Buffer.from(randomBytes(32)).toString('base64url') };
    await expect(enclave.open(items[0]!, fakeBroker)).rejects.toThrow();
  });

  it('accepts a CBOR body', async () => {
    const document = enclave.document(await enclave.challenge());
    const res = await fetch(`${broker.url}/v1/secrets`, {
      method: 'POST',
      headers: { 'content-type': 'application/cbor' },
      body: encode({ attestation: Buffer.from(document), names: ['api-key'] }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { secrets: Array<{ name: string }> };
    expect(body.secrets[0]!.name).toBe('api-key');
  });

  it('serves the secret from a KMS-encrypted binding through the real SDK', async () => {
    const res = await enclave.request(['kms-secret']);
    expect(res.status).toBe(200);
    expect(valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk))).toBe('from-kms');
  });
});

describe('denials release nothing', () => {
  const denied = async (res: Promise<{ status: number; body: { secrets?: unknown; error?: { code: string } } }>, status: number, code: string): Promise<void> => {
    const r = await res;
    expect(r.body.error?.code).toBe(code);
    expect(r.status).toBe(status);
    expect(r.body.secrets).toBeUndefined();
  };

  it('wrong PCRs', () => denied(enclave.request(['db-password'], { pcrs: buildPcrs(0x12) }), 403, 'POLICY_DENIED'));
  it('one denied name denies the whole request', () => denied(enclave.request(['db-password', 'other-app']), 403, 'POLICY_DENIED'));
  it('unknown secret answers like a denied one', () => denied(enclave.request(['no-such-secret']), 403, 'POLICY_DENIED'));
  it('debug document', () => {
    const pcrs = buildPcrs();
    for (const i of [0, 1, 2]) pcrs.set(i, new Uint8Array(48));
    return denied(enclave.request(['db-password'], { pcrs }), 403, 'DEBUG_MODE');
  });
  it('missing public key', () => denied(enclave.request(['db-password'], { publicKey: null }), 400, 'BAD_REQUEST'));
  it('EC public key instead of RSA-2048', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    return denied(enclave.request(['db-password'], { publicKey: new Uint8Array(ec) }), 400, 'BAD_REQUEST');
  });
  it('RSA-1024 public key', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'der', type: 'spki' });
    return denied(enclave.request(['db-password'], { publicKey: new Uint8Array(rsa) }), 400, 'BAD_REQUEST');
  });
  it('garbage public key', () => denied(enclave.request(['db-password'], { publicKey: randomBytes(300) }), 400, 'BAD_REQUEST'));

  it('replayed document', async () => {
    const document = enclave.document(await enclave.challenge());
    expect((await enclave.post(document, ['api-key'])).status).toBe(200);
    await denied(enclave.post(document, ['api-key']), 401, 'NONCE_MISMATCH');
  });
  it('forged nonce', () => denied(enclave.post(enclave.document(randomBytes(32)), ['api-key']), 401, 'NONCE_MISMATCH'));
  it('no nonce', () => denied(enclave.post(enclave.document(null), ['api-key']), 401, 'NONCE_MISMATCH'));
  it('expired document', async () => {
    const nonce = await enclave.challenge();
    await denied(enclave.post(enclave.document(nonce, { timestamp: Date.now() - 6 * 60_000 }), ['api-key']), 401, 'DOC_EXPIRED');
  });
  it('document under an untrusted root', async () => {
    const foreign = new TestEnclave(other, broker.url);
    await denied(foreign.request(['api-key']), 401, 'UNTRUSTED_ROOT');
  });
  it('tampered signature', () =>
    denied(
      enclave.request(['api-key'], { mutateSignature: (s) => Uint8Array.from(s, (b, i) => (i === 0 ? b ^ 1 : b)) }),
      401,
      'BAD_SIGNATURE',
    ));
});

describe('HTTP surface', () => {
  const post = (body: string | Uint8Array, type = 'application/json'): Promise<Response> =>
    fetch(`${broker.url}/v1/secrets`, { method: 'POST', headers: { 'content-type': type }, body });

  it.each([
    ['invalid JSON', '{', 'application/json'],
    ['missing names', JSON.stringify({ attestation: 'AAAA' }), 'application/json'],
    ['non-base64 attestation', JSON.stringify({ attestation: '***', names: ['a'] }), 'application/json'],
    ['bad secret name', JSON.stringify({ attestation: 'AAAA', names: ['../x'] }), 'application/json'],
    ['repeated names', JSON.stringify({ attestation: 'AAAA', names: ['a', 'a'] }), 'application/json'],
    ['33 names', JSON.stringify({ attestation: 'AAAA', names: Array.from({ length: 33 }, (_, i) => `s${i}`) }), 'application/json'],
    ['wrong content type', 'x', 'text/plain'],
    ['invalid CBOR', 'x', 'application/cbor'],
  ])('%s -> 400 BAD_REQUEST', async (_name, body, type) => {
    const res = await post(body, type);
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('BAD_REQUEST');
  });

  it('a malformed document gets its verification code', async () => {
    const res = await post(JSON.stringify({ attestation: Buffer.from('hello').toString('base64'), names: ['api-key'] }));
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('MALFORMED_COSE');
  });

  it('refuses bodies over the limit', async () => {
    const res = await post(JSON.stringify({ attestation: 'A'.repeat(100_000), names: ['x'] }));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('challenge, health, readiness, metrics, broker key, 404', async () => {
    const ch = (await (await fetch(`${broker.url}/v1/challenge`)).json()) as { nonce: string; expiresAt: number };
    expect(Buffer.from(ch.nonce, 'base64')).toHaveLength(32);
    expect(ch.expiresAt - Date.now()).toBeGreaterThan(25_000);
    expect((await fetch(`${broker.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);
    const metrics = await (await fetch(`${broker.url}/metrics`)).text();
    expect(metrics).toMatch(/^keygate_releases_total [1-9]\d*$/m); // no secret names by default (metricsSecretLabels)
    expect(metrics).toMatch(/keygate_denials_total\{code="POLICY_DENIED"\} \d+/);
    expect(metrics).toContain('keygate_verify_seconds_count');
    expect(brokerJwk).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA' });
    expect(brokerJwk).not.toHaveProperty('d');
    const missing = await fetch(`${broker.url}/nope`);
    expect(missing.status).toBe(404);
  });
});

describe('store changes take effect on the next request', () => {
  it('a new binding, a rotation, a secret revocation and a PCR0 revocation', async () => {
    const local = broker.providers.get('local')!;
    await bindSecret(admin, local, { secret: 'late', value: enc('v1'), allow: [pcrSet(APPROVED)], provider: 'local' });
    let res = await enclave.request(['late']);
    expect(valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk))).toBe('v1');

    await rotateSecret(admin, broker.providers, 'late', enc('v2'));
    res = await enclave.request(['late']);
    expect(res.body.secrets![0]!.version).toBe(2);
    expect(valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk))).toBe('v2');

    await revokeSecret(admin, 'late');
    expect((await enclave.request(['late'])).body.error?.code).toBe('POLICY_DENIED');
    await rotateSecret(admin, broker.providers, 'late', enc('v3'));
    expect((await enclave.request(['late'])).status).toBe(200);

    const canary = new TestEnclave(pki, broker.url, buildPcrs(0x44));
    await bindSecret(admin, local, { secret: 'canary', value: enc('c'), allow: [pcrSet({ ...APPROVED, 0: h(0x44) })], provider: 'local' });
    expect((await canary.request(['canary'])).status).toBe(200);
    await revokeIdentities(admin, { pcr0: [h(0x44)] });
    const revoked = await canary.request(['canary']);
    expect(revoked.status).toBe(403);
    expect(revoked.body.error?.code).toBe('REVOKED');
  });

  it('denies only the name whose binding file is corrupted (no last good copy), and is not ready until it is fixed', async () => {
    const file = join(dir, 'store', 'bindings', 'api-key.json');
    const good = readFileSync(file, 'utf8');
    writeFileSync(file, '{ "secret": "api-key", broken');
    await broker.store.rescan(); // an in-place edit does not touch the directory; the periodic full scan finds it
    const res = await enclave.request(['api-key']);
    expect(res.status).toBe(403);
    expect(res.body.error?.code).toBe('POLICY_DENIED'); // like any denial: the name's existence is not revealed
    const last = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { secret?: string; code?: string }).filter((r) => r.secret === 'api-key').at(-1);
    expect(last?.code).toBe('STORE_INVALID');
    expect((await enclave.request(['db-password'])).status).toBe(200);
    expect(broker.store.problems().map((p) => p.file)).toEqual([file]);
    const ready = await fetch(`${broker.url}/readyz`);
    expect(ready.status).toBe(503);
    // Counted, not named: /readyz is unauthenticated and binding file names are the secrets' names.
    expect(((await ready.json()) as { reason: string }).reason).toBe('store files fail validation: 1 binding file (named in the broker log and by keygate list)');
    writeFileSync(file, good);
    await broker.store.rescan();
    expect(broker.store.problems()).toEqual([]);
    expect((await enclave.request(['api-key'])).status).toBe(200);
    expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);
  });
});

describe('KMS faults', () => {
  it('retries throttling, answers KMS_UNAVAILABLE during an outage, and recovers', async () => {
    await rotateSecret(admin, broker.providers, 'kms-secret', enc('kms-v2')); // new version: not in the value cache
    kms.faults.throttle = 2;
    let res = await enclave.request(['kms-secret']);
    expect(res.status).toBe(200);
    expect(valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk))).toBe('kms-v2');

    await rotateSecret(admin, broker.providers, 'kms-secret', enc('kms-v3'));
    kms.faults.outage = true;
    res = await enclave.request(['kms-secret', 'api-key']);
    expect(res.status).toBe(503);
    expect(res.body.error?.code).toBe('KMS_UNAVAILABLE');
    expect(res.body.secrets).toBeUndefined();
    kms.faults.outage = false;
    res = await enclave.request(['kms-secret']);
    expect(valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk))).toBe('kms-v3');
  });
});

describe('audit', () => {
  // Its own broker and log: the decisions checked are the ones this test makes, whatever else ran (or did not).
  it('records every decision with its true reason, in a chain that verifies and detects tampering', async () => {
    const auditDir = mkdtempSync(join(tmpdir(), 'keygate-broker-audit-'));
    const own = await startBroker(
      resolveConfig({ listen: '127.0.0.1:0', store: join(auditDir, 'store'), stateDir: join(auditDir, 'state'), extraRootPems: [pki.root.pem], rateLimits: NO_RATE_LIMITS }),
      { log: silentLogger },
    );
    try {
      await bindSecret(own.store, own.providers.get('local')!, { secret: 'db-password', value: enc('hunter2'), allow: [pcrSet(APPROVED)], provider: 'local' });
      const client = new TestEnclave(pki, own.url);
      expect((await client.request(['db-password'])).status).toBe(200);
      expect((await client.request(['db-password'], { pcrs: buildPcrs(0x12) })).status).toBe(403);
      expect((await client.request(['no-such-secret'])).status).toBe(403);
    } finally {
      await own.close();
    }
    const text = readFileSync(join(auditDir, 'state', 'audit.jsonl'), 'utf8');
    rmSync(auditDir, { recursive: true, force: true });
    const check = verifyAuditLog(text, own.signingKey.publicKey);
    expect(check.ok).toBe(true);
    expect(check.unsealed).toBe(0);
    const records = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const decisions = records.filter((r) => r.type === 'decision');
    expect(check.decisions).toBe(3);
    expect(decisions.map((r) => [r.decision, r.code, r.secret])).toEqual([
      ['release', 'RELEASED', 'db-password'],
      ['deny', 'PCR_MISMATCH', 'db-password'],
      ['deny', 'UNKNOWN_SECRET', 'no-such-secret'],
    ]);
    expect(decisions[0]).toMatchObject({ version: 1, moduleId: expect.stringMatching(/^i-/), client: expect.stringMatching(/127\.0\.0\.1/) });
    expect(Object.keys(decisions[0]!.pcrs as object)).toEqual(['0', '1', '2', '4']);
    expect(text).not.toContain('hunter2');

    const lines = text.trim().split('\n');
    // Edit one decision (not the last line): the next line's prevHash exposes it.
    const target = lines.findIndex((l, i) => i < lines.length - 1 && l.includes('"type":"decision"'));
    const edited = [...lines];
    edited[target] = edited[target]!.replace(/"latencyMs":[\d.]+/, '"latencyMs":123456');
    expect(edited[target]).not.toBe(lines[target]);
    expect(verifyAuditLog(`${edited.join('\n')}\n`, own.signingKey.publicKey).problem?.line).toBe(target + 2);
    const dropped = lines.filter((_, i) => i !== 1);
    expect(verifyAuditLog(`${dropped.join('\n')}\n`, own.signingKey.publicKey).problem?.message).toMatch(/dropped/);
    const reordered = [lines[0]!, lines[2]!, lines[1]!, ...lines.slice(3)];
    expect(verifyAuditLog(`${reordered.join('\n')}\n`, own.signingKey.publicKey).problem?.line).toBe(2);
  });
});

describe('TLS', () => {
  it('serves HTTPS with the configured certificate and key', async () => {
    const at = Date.now();
    const ca = await issue({ ...defaultSpecs(at).root, name: 'keygate test tls ca' });
    const server = await issue(
      { ...defaultSpecs(at).leaf, name: 'localhost', notAfter: at + 3_600_000, extraExtensions: [new SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }])] },
      ca,
    );
    writeFileSync(join(dir, 'tls.crt'), server.pem);
    writeFileSync(join(dir, 'tls.key'), (KeyObject.from(server.keys.privateKey).export({ format: 'pem', type: 'pkcs8' }) as string));
    const tlsBroker = await startBroker(
      resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'tls-store'), stateDir: join(dir, 'tls-state'), tls: { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') } }),
      { log: silentLogger },
    );
    try {
      expect(tlsBroker.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      const body = await new Promise<string>((resolve, reject) => {
        request(`${tlsBroker.url}/healthz`, { ca: ca.pem }, (res) => {
          let data = '';
          res.on('data', (d: Buffer) => (data += d.toString()));
          res.on('end', () => resolve(data));
        }).on('error', reject).end();
      });
      expect(JSON.parse(body)).toEqual({ status: 'ok' });
    } finally {
      await tlsBroker.close();
    }
  });
});
