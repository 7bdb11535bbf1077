/**
 * Release mode kms-recipient over HTTP: the broker verifies the document and
 * the policy as for any release, then asks KMS to Decrypt with Recipient (the
 * enclave's own document) and passes CiphertextForRecipient on inside its
 * signed claims, never decrypting it. The real AWS SDK against the KMS-protocol
 * test server, which verifies the document and builds the CMS EnvelopedData as
 * KMS does; a real broker, store and audit file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import type { RecipientReleaseClaims, ReleaseClaims } from '../../broker/protocol/index.js';
import { decryptRecipientEnvelope } from '../../enclave-agent/cms.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave } from '../support/enclave.js';
import { startTestBroker } from '../support/broker.js';
import { TEST_CREDENTIALS, startKmsServer, type KmsTestServer } from '../support/kms-server.js';

let dir: string;
let pki: TestPki;
/** A second root the broker trusts but KMS does not: its documents verify at the broker, not at KMS. */
let otherPki: TestPki;
let kms: KmsTestServer;
let broker: RunningBroker;
let brokerJwk: JWK;
let enclave: TestEnclave;

const VALUE = 'kms-recipient-value-7f3a9c';
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-kms-recipient-'));
  [pki, otherPki] = await Promise.all([createTestPki(Date.now()), createTestPki(Date.now())]);
  kms = await startKmsServer({ attestationRoots: [pki.root.pem] });
  broker = await startTestBroker(dir, [pki.root.pem, otherPki.root.pem], {
    kms: { region: 'us-east-1', endpoint: kms.endpoint, credentials: TEST_CREDENTIALS, requestTimeoutMs: 15_000, maxAttempts: 3 },
    secretCacheTtlSeconds: 60,
  });
  brokerJwk = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
  enclave = new TestEnclave(pki, broker.url);
  const aws = broker.providers.get('aws-kms')!;
  await bindSecret(broker.store, aws, { secret: 'r-db', value: enc(VALUE), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: kms.keyId, mode: 'kms-recipient' });
  await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'j-db', value: enc('jwe-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
});

afterAll(async () => {
  await broker?.close();
  await kms?.close();
  rmSync(dir, { recursive: true, force: true });
});

const audit = (): string => readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8');
const auditCodes = (): string[] => audit().trim().split('\n').map((l) => JSON.parse(l) as { type?: string; code?: string }).filter((r) => r.type === 'decision').map((r) => r.code ?? '');
async function cacheLookups(): Promise<string> {
  const text = await (await fetch(`${broker.url}/metrics`)).text();
  return text.split('\n').filter((l) => l.startsWith('keygate_secret_cache_total')).join('\n');
}
/** Every way the value could appear in text: as is, base64, base64url, hex. */
const forms = (v: string): string[] => [v, Buffer.from(v).toString('base64').replace(/=+$/, ''), Buffer.from(v).toString('base64url'), Buffer.from(v).toString('hex')];

describe('kms-recipient release', () => {
  it('passes on KMS\'s ciphertext for the enclave\'s key inside the signed claims: the enclave decrypts it, the broker never had it', async () => {
    const lookupsBefore = await cacheLookups();
    const envelopesBefore = kms.recipient.envelopes;
    const res = await enclave.request(['r-db', 'j-db']);
    expect(res.status).toBe(200);
    const [recipientItem, jweItem] = ['r-db', 'j-db'].map((n) => res.body.secrets!.find((s) => s.name === n)!);
    const claims = (await enclave.open(recipientItem!, brokerJwk)) as unknown as RecipientReleaseClaims & { val?: unknown };
    // Bound like any release (version, TTL, nonce, document hash), but with `cms` and no `val`.
    expect(claims).toMatchObject({ iss: 'keygate', sub: 'r-db', ver: recipientItem!.version, ttl: 60, text: true });
    expect(claims.doc).toMatch(/^[0-9a-f]{64}$/);
    expect(claims.val).toBeUndefined();
    const value = decryptRecipientEnvelope(Buffer.from(claims.cms, 'base64url'), enclave.privateKey);
    expect(Buffer.from(value).toString()).toBe(VALUE);
    // A jwe binding in the same request is released as before.
    expect(Buffer.from(((await enclave.open(jweItem!, brokerJwk)) as ReleaseClaims).val, 'base64url').toString()).toBe('jwe-value');

    // KMS built one envelope; the broker's value cache was not consulted for it, and the audit has no trace of the value.
    expect(kms.recipient.envelopes).toBe(envelopesBefore + 1);
    const records = audit();
    for (const form of forms(VALUE)) expect(records).not.toContain(form);
    expect(JSON.stringify(res.body)).not.toContain(VALUE);
    const lookupsAfter = await cacheLookups();
    // Only the jwe name went through the cache (one miss); the recipient name never does.
    expect(lookupsAfter).not.toBe(lookupsBefore);
    const misses = (t: string): number => Number(/result="miss"\} (\d+)/.exec(t)?.[1] ?? 0);
    const hits = (t: string): number => Number(/result="hit"\} (\d+)/.exec(t)?.[1] ?? 0);
    expect(misses(lookupsAfter) + hits(lookupsAfter) - misses(lookupsBefore) - hits(lookupsBefore)).toBe(1);

    // Nothing cached: the next request asks KMS again, for that request's own document.
    const again = await enclave.request(['r-db']);
    expect(again.status).toBe(200);
    expect(kms.recipient.envelopes).toBe(envelopesBefore + 2);
    expect(misses(await cacheLookups()) + hits(await cacheLookups())).toBe(misses(lookupsAfter) + hits(lookupsAfter));
  });

  it.each([
    ['plaintext', 'KMS_RECIPIENT_PLAINTEXT'],
    ['both', 'KMS_RECIPIENT_PLAINTEXT'],
    ['none', 'KMS_RECIPIENT_MISSING'],
  ] as const)('refuses a KMS answer carrying %s instead of only CiphertextForRecipient: SECRET_UNAVAILABLE, nothing released, audited %s', async (answer, providerError) => {
    kms.recipient.answer = answer;
    try {
      const res = await enclave.request(['r-db', 'j-db']);
      expect(res.status).toBe(500);
      expect(res.body.error?.code).toBe('SECRET_UNAVAILABLE');
      expect(res.body.secrets).toBeUndefined();
      const codes = auditCodes();
      expect(codes.slice(-2).sort()).toEqual(['BATCH_DENIED', `SECRET_UNAVAILABLE:${providerError}`]);
      for (const form of forms(VALUE)) expect(audit()).not.toContain(form);
      expect(JSON.stringify(res.body)).not.toContain(VALUE);
    } finally {
      kms.recipient.answer = 'cms';
    }
  });

  it('releases nothing when KMS refuses the document (a root the broker trusts but KMS does not)', async () => {
    const stranger = new TestEnclave(otherPki, broker.url);
    const res = await stranger.request(['r-db']);
    expect(res.status).toBe(500);
    expect(res.body.error?.code).toBe('SECRET_UNAVAILABLE');
    expect(auditCodes().at(-1)).toBe('SECRET_UNAVAILABLE:ValidationException');
    // The same enclave gets a jwe secret: the broker itself accepted the document.
    expect((await stranger.request(['j-db'])).status).toBe(200);
  });

  it('is only for aws-kms: a local-provider binding cannot ask for it', async () => {
    await expect(
      bindSecret(broker.store, broker.providers.get('local')!, { secret: 'r-local', value: enc('x'), allow: [pcrSet(APPROVED)], provider: 'local', mode: 'kms-recipient' }),
    ).rejects.toMatchObject({ code: 'SCHEMA_INVALID', path: 'binding.mode' });
  });
});
