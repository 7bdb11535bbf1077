/**
 * Key provider failures over HTTP (issue 9, item 4): transient ones answer
 * KMS_UNAVAILABLE (503, retry later), permanent ones SECRET_UNAVAILABLE (500,
 * an operator must act), the audit keeps the provider's own error name, a
 * disabled or deleted key loses its cached values at once, and /readyz asks
 * DescribeKey about the keys in use. The real AWS SDK against the KMS-protocol
 * test server; a real broker, store and audit file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet, revokeSecret, unbindSecret } from '../../broker/admin.js';
import { parseBinding } from '../../broker/policy/schema.js';
import type { Binding } from '../../broker/policy/types.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../support/enclave.js';
import type { KmsTestServer } from '../support/kms-server.js';
import { startKmsBroker, type KmsBroker } from '../support/kms-broker.js';

let dir: string;
let pki: TestPki;
let kms: KmsTestServer;
let broker: RunningBroker;
let brokerJwk: JWK;
let enclave: TestEnclave;
let running: KmsBroker | undefined;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-kms-failures-'));
  pki = await createTestPki(Date.now());
  running = await startKmsBroker(dir, pki, { maxAttempts: 3 }, { secretCacheTtlSeconds: 60 });
  ({ kms, broker, brokerJwk, enclave } = running);
});

afterAll(async () => {
  await running?.close();
  rmSync(dir, { recursive: true, force: true });
});

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function bindKms(secret: string, keyId: string): Promise<Binding> {
  return bindSecret(broker.store, broker.providers.get('aws-kms')!, { secret, value: enc(`${secret}-value`), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: keyId });
}

function bindLocal(secret: string): Promise<Binding> {
  return bindSecret(broker.store, broker.providers.get('local')!, { secret, value: enc(`${secret}-value`), allow: [pcrSet(APPROVED)], provider: 'local' });
}

/** Writes a binding as given (what a tampered or hand-edited store holds). */
async function putRaw(binding: Binding): Promise<void> {
  await broker.store.update(async (_current, tx) => tx.putBinding(parseBinding(binding)));
}

/** The code of the last audited decision about `secret`. */
function auditedCode(secret: string): string | undefined {
  const lines = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8').trim().split('\n');
  const decisions = lines.map((l) => JSON.parse(l) as { type?: string; secret?: string; code?: string }).filter((r) => r.type === 'decision' && r.secret === secret);
  return decisions.at(-1)?.code;
}

/** Requests `names`; returns HTTP status, body code and each name's audited code. */
async function attempt(names: string[]): Promise<{ status: number; code: string | undefined; released: boolean; audit: Array<string | undefined> }> {
  const res = await enclave.request(names);
  return { status: res.status, code: res.body.error?.code, released: res.body.secrets !== undefined, audit: names.map(auditedCode) };
}

async function releasedValue(name: string): Promise<string> {
  const res = await enclave.request([name]);
  expect(res.status).toBe(200);
  return valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk));
}

const decrypts = (): number => kms.calls.get('Decrypt') ?? 0;

describe('transient provider failures -> 503 KMS_UNAVAILABLE with the provider error name', () => {
  it('throttling beyond the SDK retries', async () => {
    await bindKms('t-throttle', kms.keyId);
    kms.faults.throttle = 3;
    expect(await attempt(['t-throttle'])).toEqual({ status: 503, code: 'KMS_UNAVAILABLE', released: false, audit: ['KMS_UNAVAILABLE:ThrottlingException'] });
    expect(kms.faults.throttle).toBe(0);
    expect(await releasedValue('t-throttle')).toBe('t-throttle-value');
  });

  it('internal errors (5xx)', async () => {
    await bindKms('t-internal', kms.keyId);
    kms.faults.internal = 3;
    expect(await attempt(['t-internal'])).toEqual({ status: 503, code: 'KMS_UNAVAILABLE', released: false, audit: ['KMS_UNAVAILABLE:KMSInternalException'] });
    expect(await releasedValue('t-internal')).toBe('t-internal-value');
  });

  it('connection errors', async () => {
    await bindKms('t-outage', kms.keyId);
    kms.faults.outage = true;
    try {
      const r = await attempt(['t-outage']);
      expect([r.status, r.code, r.released]).toEqual([503, 'KMS_UNAVAILABLE', false]);
      expect(r.audit[0]).toMatch(/^KMS_UNAVAILABLE:\w+$/);
    } finally {
      kms.faults.outage = false;
    }
    expect(await releasedValue('t-outage')).toBe('t-outage-value');
  });
});

describe('permanent provider failures -> 500 SECRET_UNAVAILABLE, audited with the provider error name', () => {
  it('a disabled key: refused, and every value cached under it is dropped at once; served again once enabled', async () => {
    const key = kms.createKey();
    await bindKms('p-cached', key);
    await bindKms('p-fresh', key);
    await bindKms('p-other-key', kms.keyId);
    expect(await releasedValue('p-cached')).toBe('p-cached-value'); // now in the value cache
    expect(await releasedValue('p-other-key')).toBe('p-other-key-value');

    kms.disableKey(key);
    expect(await attempt(['p-fresh'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:DisabledException'] });
    // The cached value of the other secret under that key is gone: KMS is asked, and refuses.
    const before = decrypts();
    expect(await attempt(['p-cached'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:DisabledException'] });
    expect(decrypts()).toBeGreaterThan(before);
    // Values under other keys stay cached.
    const other = decrypts();
    expect(await releasedValue('p-other-key')).toBe('p-other-key-value');
    expect(decrypts()).toBe(other);
    // A batch with one refused name releases nothing; the others are audited as denied with it.
    expect(await attempt(['p-other-key', 'p-fresh'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['BATCH_DENIED', 'SECRET_UNAVAILABLE:DisabledException'] });

    kms.enableKey(key);
    expect(await releasedValue('p-cached')).toBe('p-cached-value');
    for (const s of ['p-cached', 'p-fresh', 'p-other-key']) await unbindSecret(broker.store, s);
  });

  it('a decrypt in flight while the key is found disabled releases once but is not cached back', async () => {
    const key = kms.createKey();
    await bindKms('p-slow', key);
    await bindKms('p-probe', key);
    // 'p-slow' misses the cache; KMS decides its Decrypt while the key is enabled, and answers late.
    kms.faults.latencyMs = 3_000;
    const before = decrypts();
    const slow = enclave.request(['p-slow']);
    await expect.poll(decrypts, { timeout: 20_000, interval: 10 }).toBeGreaterThan(before);
    kms.faults.latencyMs = 0;
    // Meanwhile the key is disabled and another request finds out: the key's cached values are dropped.
    kms.disableKey(key);
    expect(await attempt(['p-probe'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:DisabledException'] });
    // The late answer was decided before the disable: it may be released this once ...
    expect((await slow).status).toBe(200);
    // ... but it must not come back from the cache now that the key is known disabled.
    expect(await attempt(['p-slow'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:DisabledException'] });
    kms.enableKey(key);
    for (const s of ['p-slow', 'p-probe']) await unbindSecret(broker.store, s);
  });

  it('a key pending deletion (KMSInvalidStateException) and a deleted key (NotFoundException)', async () => {
    const pending = kms.createKey();
    const deleted = kms.createKey();
    await bindKms('p-pending', pending);
    await bindKms('p-deleted', deleted);
    kms.scheduleKeyDeletion(pending);
    kms.deleteKey(deleted);
    expect(await attempt(['p-pending'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:KMSInvalidStateException'] });
    expect(await attempt(['p-deleted'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:NotFoundException'] });
    for (const s of ['p-pending', 'p-deleted']) await unbindSecret(broker.store, s);
  });

  it('access denied is not retried and not reported as an outage', async () => {
    await bindKms('p-denied', kms.keyId);
    const before = decrypts();
    kms.faults.accessDenied = 1; // one refusal: a retrying client would succeed on its second attempt
    expect(await attempt(['p-denied'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:AccessDeniedException'] });
    expect(decrypts() - before).toBe(1);
    expect(await releasedValue('p-denied')).toBe('p-denied-value');
    await unbindSecret(broker.store, 'p-denied');
  });

  it('a ciphertext moved onto another secret (encryption context mismatch) and one under another key', async () => {
    const a = await bindKms('p-ctx-a', kms.keyId);
    const b = await bindKms('p-ctx-b', kms.keyId);
    await putRaw({ ...b, version: b.version + 1, ciphertext: a.ciphertext });
    expect(await attempt(['p-ctx-b'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:InvalidCiphertextException'] });
    await putRaw({ ...a, version: a.version + 1, kmsKeyId: kms.createKey() });
    expect(await attempt(['p-ctx-a'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:IncorrectKeyException'] });
    for (const s of ['p-ctx-a', 'p-ctx-b']) await unbindSecret(broker.store, s);
  });

  it('the local provider: AES-GCM authentication failure and a ciphertext that is not one', async () => {
    const a = await bindLocal('p-local-a');
    const b = await bindLocal('p-local-b');
    await putRaw({ ...b, version: b.version + 1, ciphertext: a.ciphertext });
    expect(await attempt(['p-local-b'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:AuthenticationFailed'] });
    await putRaw({ ...a, version: a.version + 1, ciphertext: 'AAAA' });
    expect(await attempt(['p-local-a'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:InvalidCiphertext'] });
    for (const s of ['p-local-a', 'p-local-b']) await unbindSecret(broker.store, s);
  });
});

describe('/readyz checks the KMS keys in use', () => {
  const readiness = async (): Promise<number> => (await fetch(`${broker.url}/readyz`)).status;

  it('asks DescribeKey (not GenerateRandom), turns 503 for a disabled key and drops its cached values, recovers once enabled', async () => {
    const key = kms.createKey();
    await bindKms('r-secret', key);
    expect(await releasedValue('r-secret')).toBe('r-secret-value'); // cached
    await expect.poll(readiness, { timeout: 20_000, interval: 200 }).toBe(200);
    expect(kms.calls.get('DescribeKey') ?? 0).toBeGreaterThan(0);
    expect(kms.calls.get('GenerateRandom') ?? 0).toBe(0);

    kms.disableKey(key);
    // Readiness answers are reused for 5 s while ready: poll until the check runs again.
    await expect.poll(readiness, { timeout: 20_000, interval: 200 }).toBe(503);
    const body = (await (await fetch(`${broker.url}/readyz`)).json()) as { status: string; reason: string };
    expect(body.status).toBe('not ready');
    expect(body.reason).not.toContain(key);
    // Readiness found the key disabled, so the cached value is no longer served.
    expect(await attempt(['r-secret'])).toEqual({ status: 500, code: 'SECRET_UNAVAILABLE', released: false, audit: ['SECRET_UNAVAILABLE:DisabledException'] });

    kms.enableKey(key);
    await expect.poll(readiness, { timeout: 20_000, interval: 200 }).toBe(200);
    kms.scheduleKeyDeletion(key);
    await expect.poll(readiness, { timeout: 20_000, interval: 200 }).toBe(503);
    // A revoked binding is not in use: its key does not hold readiness hostage.
    await revokeSecret(broker.store, 'r-secret');
    await expect.poll(readiness, { timeout: 20_000, interval: 200 }).toBe(200);
    await unbindSecret(broker.store, 'r-secret');
  });

  it('does not turn unauthenticated /readyz calls into KMS calls: failures are reused too, and checks are shared', async () => {
    const key = kms.createKey();
    await bindKms('r-amplify', key);
    kms.disableKey(key);
    await expect.poll(readiness, { timeout: 20_000, interval: 200 }).toBe(503);
    const before = kms.calls.get('DescribeKey') ?? 0;
    const answers = await Promise.all(Array.from({ length: 100 }, () => readiness()));
    expect(answers.every((s) => s === 503)).toBe(true);
    // One check covers a burst; a few more if the burst outlives the reuse window on a slow machine.
    expect((kms.calls.get('DescribeKey') ?? 0) - before).toBeLessThanOrEqual(3 * 4);
    kms.enableKey(key);
    await unbindSecret(broker.store, 'r-amplify');
    await expect.poll(readiness, { timeout: 20_000, interval: 200 }).toBe(200);
  });

  it('is 503 while KMS is unreachable', async () => {
    await bindKms('r-outage', kms.keyId);
    kms.faults.outage = true;
    try {
      await expect.poll(readiness, { timeout: 30_000, interval: 200 }).toBe(503);
    } finally {
      kms.faults.outage = false;
    }
    await expect.poll(readiness, { timeout: 30_000, interval: 200 }).toBe(200);
  });
});
