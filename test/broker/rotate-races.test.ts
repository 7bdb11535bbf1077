/**
 * A rotation encrypts its value outside the store transaction. If another
 * admin revoked the secret or re-bound it for other enclaves meanwhile, the
 * rotation must not land on top: it would silently clear the revocation, or
 * put a value meant for one policy under another. It is refused
 * (ADMIN_REFUSED) and the other admin's change stands. (A concurrent
 * rotation of an unchanged policy lands after it: version-monotonic.test.ts.)
 * Deterministic: the rotating admin's encrypt waits on a gate.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { AdminError, bindSecret, pcrSet, revokeSecret, rotateSecret } from '../../broker/admin.js';
import type { KeyProvider } from '../../broker/kms/provider.js';
import type { ProviderName } from '../../broker/policy/types.js';
import { FileStore } from '../../broker/store/file-store.js';
import { DynamoDbStore, initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import type { BindingStore } from '../../broker/store/store.js';
import { APPROVED } from '../support/enclave.js';
import { awsOf, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
const tempDir = tempDirs('kg-attack-race-');
beforeAll(async () => {
  moto = await startMoto();
}, 90_000);
afterAll(async () => {
  await moto?.stop();
});

function gatedProvider(): { provider: KeyProvider; entered: Promise<void>; open(): void; arm(): void } {
  let armed = false;
  let enter!: () => void;
  const entered = new Promise<void>((r) => (enter = r));
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const provider: KeyProvider = {
    name: 'aws-kms',
    async encrypt(plaintext) {
      if (armed) {
        enter();
        await gate;
      }
      return Buffer.from(plaintext).toString('base64');
    },
    async decrypt(c) {
      return Buffer.from(c, 'base64');
    },
    async check() {},
    close() {},
  };
  return { provider, entered, open, arm: () => (armed = true) };
}

async function race(admin1: BindingStore, admin2: BindingStore): Promise<{ rotated: unknown; final: { revoked: boolean; version: number } }> {
  const g = gatedProvider();
  const providers = new Map<ProviderName, KeyProvider>([['aws-kms', g.provider]]);
  await bindSecret(admin1, g.provider, { secret: 'db', value: new TextEncoder().encode('v1'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: 'alias/k' });
  g.arm();
  const rotating = rotateSecret(admin1, providers, 'db', new TextEncoder().encode('v2')).then(
    (b) => b,
    (e: unknown) => e,
  );
  await g.entered; // admin 1 has read the binding (not revoked) and is encrypting
  const revoked = await revokeSecret(admin2, 'db'); // admin 2: emergency revocation, committed
  expect(revoked.revoked).toBe(true);
  g.open();
  const rotated = await rotating;
  const final = (await admin2.rescan()).bindings.get('db')!;
  return { rotated, final: { revoked: final.revoked, version: final.version } };
}

describe('rotate racing a re-bind that changes who may read the secret', () => {
  it('DynamoDB store: a value encrypted for the old policy is not written under a policy the rotating admin never saw', async () => {
    const aws = awsOf(moto);
    const settings = { kind: 'dynamodb' as const, table: uniqueName('kg-attack-rebind'), region: aws.region, endpoint: aws.endpoint, consistency: { maxStalenessMs: 0 } };
    await initDynamoDbStoreTable(settings, { credentials: aws.credentials });
    const a = await DynamoDbStore.open(settings, { client: { credentials: aws.credentials } });
    const b = await DynamoDbStore.open(settings, { client: { credentials: aws.credentials } });
    try {
      const g = gatedProvider();
      const providers = new Map<ProviderName, KeyProvider>([['aws-kms', g.provider]]);
      await bindSecret(a, g.provider, { secret: 'db', value: new TextEncoder().encode('v1'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: 'alias/k' });
      g.arm();
      const rotating = rotateSecret(a, providers, 'db', new TextEncoder().encode('prod-value')).then((x) => x, (e: unknown) => e);
      await g.entered;
      // Admin 2 re-binds the name for other enclaves (same provider and key).
      const other = { 0: 'ab'.repeat(48), 1: 'cd'.repeat(48), 2: 'ef'.repeat(48) };
      const plain = new Map<ProviderName, KeyProvider>([['aws-kms', { ...g.provider, encrypt: async (p: Uint8Array) => Buffer.from(p).toString('base64') }]]);
      await bindSecret(b, plain.get('aws-kms')!, { secret: 'db', value: new TextEncoder().encode('test-value'), allow: [pcrSet(other)], provider: 'aws-kms', kmsKeyId: 'alias/k' });
      g.open();
      const rotated = await rotating;
      const final = (await b.rescan()).bindings.get('db')!;
      const valueNow = Buffer.from(final.ciphertext, 'base64').toString();
      const releasedToNewPolicy = valueNow === 'prod-value' && final.allow[0]!.pcrs[0] === other[0];
      expect(releasedToNewPolicy).toBe(false);
      expect(rotated).toBeInstanceOf(AdminError);
      expect((rotated as AdminError).code).toBe('ADMIN_REFUSED');
      expect(Buffer.from(final.ciphertext, 'base64').toString()).toBe('test-value');
    } finally {
      a.close();
      b.close();
    }
  });
});

describe('rotate racing revoke (lost revocation)', () => {
  it('file store: a revocation committed while a rotation was encrypting is not silently undone', async () => {
    const dir = tempDir();
    const a = await FileStore.open(join(dir, 'store'));
    const b = await FileStore.open(join(dir, 'store'));
    const { rotated, final } = await race(a, b);
    expect(final.revoked).toBe(true);
    expect(rotated).toBeInstanceOf(AdminError);
    expect((rotated as AdminError).code).toBe('ADMIN_REFUSED');
  });

  it('DynamoDB store: a revocation committed while a rotation was encrypting is not silently undone', async () => {
    const aws = awsOf(moto);
    const settings = { kind: 'dynamodb' as const, table: uniqueName('kg-attack-race'), region: aws.region, endpoint: aws.endpoint, consistency: { maxStalenessMs: 0 } };
    await initDynamoDbStoreTable(settings, { credentials: aws.credentials });
    const a = await DynamoDbStore.open(settings, { client: { credentials: aws.credentials } });
    const b = await DynamoDbStore.open(settings, { client: { credentials: aws.credentials } });
    try {
      const { rotated, final } = await race(a, b);
      expect(final.revoked).toBe(true);
      expect(rotated).toBeInstanceOf(AdminError);
      expect((rotated as AdminError).code).toBe('ADMIN_REFUSED');
    } finally {
      a.close();
      b.close();
    }
  });
});
