import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { AwsKmsKeyProvider } from '../../broker/kms/aws-kms.js';
import { CiphertextError, KmsUnavailableError } from '../../broker/kms/provider.js';
import { loadOrCreateSigningKey } from '../../broker/signing-key.js';
import { TEST_CREDENTIALS, startKmsServer, type KmsTestServer } from '../support/kms-server.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-kms-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const value = new TextEncoder().encode('s3cr3t-value');

describe('local key provider', () => {
  it('creates its key file with mode 0600 once and reuses it', async () => {
    const file = join(dir, 'state', 'local.key');
    const a = await LocalKeyProvider.open(file);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const key = readFileSync(file);
    const b = await LocalKeyProvider.open(file);
    expect(readFileSync(file).equals(key)).toBe(true);
    expect(await b.decrypt(await a.encrypt(value, 'db'), 'db')).toEqual(value);
  });

  it('binds ciphertexts to the secret name and detects tampering', async () => {
    const p = await LocalKeyProvider.open(join(dir, 'k2.key'));
    const ct = await p.encrypt(value, 'db');
    await expect(p.decrypt(ct, 'api-key')).rejects.toBeInstanceOf(CiphertextError);
    const raw = Buffer.from(ct, 'base64');
    raw[raw.length - 1]! ^= 1;
    await expect(p.decrypt(raw.toString('base64'), 'db')).rejects.toBeInstanceOf(CiphertextError);
    await expect(p.decrypt('AAAA', 'db')).rejects.toBeInstanceOf(CiphertextError);
  });

  it('gives every process racing to create the key the same key', async () => {
    const file = join(dir, 'race', 'local.key');
    const providers = await Promise.all(Array.from({ length: 8 }, () => LocalKeyProvider.open(file)));
    const ct = await providers[0]!.encrypt(value, 'db');
    for (const p of providers) expect(await p.decrypt(ct, 'db')).toEqual(value);
    const keys = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateSigningKey(join(dir, 'race', 'signing.jwk'))));
    expect(new Set(keys.map((k) => k.kid)).size).toBe(1);
    expect(statSync(join(dir, 'race', 'signing.jwk')).mode & 0o777).toBe(0o600);
  });

  it('refuses a key file of the wrong size instead of replacing it', async () => {
    const file = join(dir, 'short.key');
    writeFileSync(file, 'short');
    await expect(LocalKeyProvider.open(file)).rejects.toThrow(/exactly 32 bytes/);
    expect(readFileSync(file, 'utf8')).toBe('short');
  });
});

describe('aws-kms provider against the local KMS-protocol server', () => {
  let kms: KmsTestServer;
  let provider: AwsKmsKeyProvider;
  beforeAll(async () => {
    kms = await startKmsServer();
    provider = new AwsKmsKeyProvider({ region: 'us-east-1', endpoint: kms.endpoint, credentials: TEST_CREDENTIALS, requestTimeoutMs: 15_000 });
  });
  afterAll(async () => {
    provider.close();
    await kms.close();
  });

  it('round-trips through Encrypt and Decrypt with the secret as encryption context', async () => {
    const ct = await provider.encrypt(value, 'db', kms.keyId);
    expect(await provider.decrypt(ct, 'db', kms.keyId)).toEqual(value);
    await expect(provider.decrypt(ct, 'other', kms.keyId)).rejects.toBeInstanceOf(CiphertextError);
    await expect(provider.check([kms.keyId])).resolves.toBeUndefined();
  });

  it('retries throttling and recovers', async () => {
    const ct = await provider.encrypt(value, 'db', kms.keyId);
    kms.faults.throttle = 2; // the SDK's third attempt succeeds
    expect(await provider.decrypt(ct, 'db', kms.keyId)).toEqual(value);
    expect(kms.faults.throttle).toBe(0);
  });

  it('tolerates latency within the request timeout and gives up beyond it', async () => {
    const ct = await provider.encrypt(value, 'db', kms.keyId);
    kms.faults.latencyMs = 200;
    expect(await provider.decrypt(ct, 'db', kms.keyId)).toEqual(value);
    const impatient = new AwsKmsKeyProvider({ region: 'us-east-1', endpoint: kms.endpoint, credentials: TEST_CREDENTIALS, requestTimeoutMs: 100, maxAttempts: 1 });
    await expect(impatient.decrypt(ct, 'db', kms.keyId)).rejects.toBeInstanceOf(KmsUnavailableError);
    impatient.close();
    kms.faults.latencyMs = 0;
  });

  it('reports persistent throttling, internal errors and outages as KMS unavailable', async () => {
    const ct = await provider.encrypt(value, 'db', kms.keyId);
    kms.faults.throttle = 3;
    await expect(provider.decrypt(ct, 'db', kms.keyId)).rejects.toBeInstanceOf(KmsUnavailableError);
    kms.faults.internal = 3;
    await expect(provider.decrypt(ct, 'db', kms.keyId)).rejects.toBeInstanceOf(KmsUnavailableError);
    kms.faults.outage = true;
    await expect(provider.decrypt(ct, 'db', kms.keyId)).rejects.toBeInstanceOf(KmsUnavailableError);
    await expect(provider.check([kms.keyId])).rejects.toBeInstanceOf(KmsUnavailableError);
    kms.faults.outage = false;
    expect(await provider.decrypt(ct, 'db', kms.keyId)).toEqual(value);
  });
});
