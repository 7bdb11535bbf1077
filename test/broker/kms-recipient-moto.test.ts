/**
 * An implementation of KMS that ignores `Recipient` must not make the broker a
 * plaintext holder. moto's KMS is one (it answers Decrypt with Plaintext
 * whatever Recipient says): the real @aws-sdk/client-kms against moto_server,
 * at the provider and through a real broker.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateKeyCommand, DecryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { AwsKmsKeyProvider } from '../../broker/kms/aws-kms.js';
import { RecipientRefusedError } from '../../broker/kms/provider.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import type { RunningBroker } from '../../broker/broker.js';
import { awsOf, startMoto, type Moto } from '../support/moto.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave } from '../support/enclave.js';
import { startTestBroker } from '../support/broker.js';

let moto: Moto;
let keyId: string;
let pki: TestPki;
let dir: string;
let broker: RunningBroker;
const VALUE = 'moto-plaintext-must-not-pass-41c2';

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  const client = new KMSClient(awsOf(moto));
  keyId = (await client.send(new CreateKeyCommand({}))).KeyMetadata!.KeyId!;
  client.destroy();
  dir = mkdtempSync(join(tmpdir(), 'keygate-recipient-moto-'));
  broker = await startTestBroker(dir, [pki.root.pem], { kms: { ...awsOf(moto), requestTimeoutMs: 30_000, maxAttempts: 1 } });
}, 120_000);

afterAll(async () => {
  await broker?.close();
  await moto?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('a KMS that ignores Recipient (moto)', () => {
  it('answers Decrypt-with-Recipient with Plaintext (what this test relies on)', async () => {
    const provider = new AwsKmsKeyProvider(awsOf(moto));
    const ciphertext = await provider.encrypt(Buffer.from(VALUE), 's', keyId);
    const client = new KMSClient(awsOf(moto));
    const out = await client.send(
      new DecryptCommand({
        CiphertextBlob: Buffer.from(ciphertext, 'base64'),
        EncryptionContext: { 'keygate:secret': 's' },
        Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: new TestEnclave(pki, 'http://unused').document(new Uint8Array(32)) },
      }),
    );
    client.destroy();
    provider.close();
    expect(Buffer.from(out.Plaintext!).toString()).toBe(VALUE);
    expect(out.CiphertextForRecipient).toBeUndefined();
  });

  it('is refused by the provider: RecipientRefusedError KMS_RECIPIENT_PLAINTEXT (SECRET_UNAVAILABLE), the value never returned', async () => {
    const provider = new AwsKmsKeyProvider(awsOf(moto));
    try {
      const ciphertext = await provider.encrypt(Buffer.from(VALUE), 's', keyId);
      const err = await provider.decryptForRecipient(ciphertext, 's', keyId, new TestEnclave(pki, 'http://unused').document(new Uint8Array(32))).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(RecipientRefusedError);
      expect(err).toMatchObject({ code: 'SECRET_UNAVAILABLE', providerError: 'KMS_RECIPIENT_PLAINTEXT' });
      expect(String((err as Error).message)).not.toContain(VALUE);
    } finally {
      provider.close();
    }
  });

  it('releases nothing through a broker bound with kms-recipient, and audits why without the value', async () => {
    await bindSecret(broker.store, broker.providers.get('aws-kms')!, { secret: 'r-moto', value: Buffer.from(VALUE), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: keyId, mode: 'kms-recipient' });
    const res = await new TestEnclave(pki, broker.url).request(['r-moto']);
    expect(res.status).toBe(500);
    expect(res.body).toMatchObject({ error: { code: 'SECRET_UNAVAILABLE' } });
    const records = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8');
    const decisions = records.trim().split('\n').map((l) => JSON.parse(l) as { type?: string; code?: string; secret?: string }).filter((r) => r.type === 'decision');
    expect(decisions.at(-1)).toMatchObject({ secret: 'r-moto', code: 'SECRET_UNAVAILABLE:KMS_RECIPIENT_PLAINTEXT' });
    for (const form of [VALUE, Buffer.from(VALUE).toString('base64').replace(/=+$/, ''), Buffer.from(VALUE).toString('hex')]) expect(records).not.toContain(form);
  });
});
