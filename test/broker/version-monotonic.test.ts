/**
 * Agents refuse a version lower than one they already accepted (rollback
 * protection), so the store must never hand out a version twice: not after a
 * rotation, and not after an unbind followed by a new bind of the same name.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { AdminError, bindSecret, pcrSet, rotateSecret } from '../../broker/admin.js';
import { AwsKmsKeyProvider } from '../../broker/kms/aws-kms.js';
import type { KeyProvider } from '../../broker/kms/provider.js';
import type { ProviderName } from '../../broker/policy/types.js';
import { APPROVED } from '../support/enclave.js';
import { TEST_CREDENTIALS, startKmsServer } from '../support/kms-server.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-version-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const value = (s: string): Uint8Array => new TextEncoder().encode(s);

// Versions never repeat after unbind and re-bind, on every backend: store-behaviour.test.ts.

describe('two admins at once', () => {
  it('a rotation racing another rotation of the same binding is applied after it: no refusal, no lost version', async () => {
    const store = await FileStore.open(join(dir, 'store'));
    const local = await LocalKeyProvider.open(join(dir, 'local.key'));
    const first = await bindSecret(store, local, { secret: 'db', value: value('v1'), allow: [pcrSet(APPROVED)], provider: 'local' });
    let entered!: () => void;
    const encrypting = new Promise<void>((r) => (entered = r));
    let proceed!: () => void;
    const gate = new Promise<void>((r) => (proceed = r));
    const slowLocal: KeyProvider = { ...local, name: 'local', check: () => local.check(), close: () => local.close(), decrypt: (c, s) => local.decrypt(c, s), encrypt: async (p, s) => (entered(), await gate, local.encrypt(p, s)) };
    const rotating = rotateSecret(store, new Map<ProviderName, KeyProvider>([['local', slowLocal]]), 'db', value('by-A'));
    await encrypting;
    const b = await rotateSecret(store, new Map<ProviderName, KeyProvider>([['local', local]]), 'db', value('by-B'));
    expect(b.version).toBe(first.version + 1);
    proceed();
    const a = await rotating;
    expect(a.version).toBe(first.version + 2);
    const now = (await store.refresh()).bindings.get('db')!;
    expect(now.version).toBe(first.version + 2);
    expect(new TextDecoder().decode(await local.decrypt(now.ciphertext, 'db'))).toBe('by-A');
  });

  it('a rotation racing a re-bind to another provider is refused, and the re-bind stands and decrypts', async () => {
    const kms = await startKmsServer();
    const aws = new AwsKmsKeyProvider({ region: 'us-east-1', endpoint: kms.endpoint, credentials: TEST_CREDENTIALS });
    try {
      const store = await FileStore.open(join(dir, 'store'));
      const local = await LocalKeyProvider.open(join(dir, 'local.key'));
      await bindSecret(store, local, { secret: 'db', value: value('old'), allow: [pcrSet(APPROVED)], provider: 'local' });
      // Admin A's rotation is slow to encrypt (it holds no lock meanwhile).
      let entered!: () => void;
      const encrypting = new Promise<void>((r) => (entered = r));
      let proceed!: () => void;
      const gate = new Promise<void>((r) => (proceed = r));
      const slowLocal: KeyProvider = { ...local, name: 'local', check: () => local.check(), close: () => local.close(), decrypt: (c, s) => local.decrypt(c, s), encrypt: async (p, s) => (entered(), await gate, local.encrypt(p, s)) };
      const providers = new Map<ProviderName, KeyProvider>([['local', slowLocal], ['aws-kms', aws]]);
      const rotating = rotateSecret(store, providers, 'db', value('rotated-by-A')).then(
        () => undefined,
        (err: unknown) => err,
      );
      await encrypting;
      // Admin B moves the secret to AWS KMS meanwhile.
      const b = await bindSecret(store, aws, { secret: 'db', value: value('bound-by-B'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: kms.keyId });
      proceed();
      const err = await rotating;
      expect(err).toBeInstanceOf(AdminError);
      expect((err as Error).message).toMatch(/changed while/);
      const now = (await store.refresh()).bindings.get('db')!;
      expect(now).toEqual(b);
      expect(new TextDecoder().decode(await aws.decrypt(now.ciphertext, 'db', now.kmsKeyId))).toBe('bound-by-B');
    } finally {
      aws.close();
      await kms.close();
    }
  });
});
