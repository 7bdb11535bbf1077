/**
 * A secret bound in kms-recipient mode (the broker never holds its value) is not quietly moved to a
 * provider the broker decrypts with by a re-bind that does not name the mode (the admin API's and the
 * CLI's default provider is local). Found in review; reproduced first.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminError, bindSecret } from '../../broker/admin.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import type { KeyProvider } from '../../broker/kms/provider.js';

const PCR = (c: string): string => c.repeat(96);
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keygate-mode-keep-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Stands in for aws-kms: bindSecret only encrypts.
const fakeKms = { name: 'aws-kms', encrypt: async () => Buffer.from('kms-ciphertext').toString('base64'), decrypt: async () => Promise.reject(new Error('unused')), check: async () => {}, close: () => {} } as unknown as KeyProvider;

describe('a kms-recipient binding re-bound without naming the mode', () => {
  it('to the local provider (the default) is refused with ADMIN_REFUSED and the binding stays as it was', async () => {
    const store = await FileStore.open(join(dir, 'store'));
    const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
    const allow = [{ pcrs: { 0: PCR('a'), 1: PCR('b'), 2: PCR('c') } }];
    const first = await bindSecret(store, fakeKms, { secret: 's', value: new TextEncoder().encode('v1'), allow, provider: 'aws-kms', kmsKeyId: 'alias/k', mode: 'kms-recipient' });
    expect(first.mode).toBe('kms-recipient');
    const again = await bindSecret(store, local, { secret: 's', value: new TextEncoder().encode('v1'), allow: [{ pcrs: { 0: PCR('d'), 1: PCR('b'), 2: PCR('c') } }], provider: 'local', addAllow: true }).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(AdminError);
    expect((again as AdminError).code).toBe('ADMIN_REFUSED');
    const now = (await store.refresh()).bindings.get('s')!;
    expect([now.provider, now.mode, now.version]).toEqual(['aws-kms', 'kms-recipient', first.version]);
    // On aws-kms without the flag the mode is kept, as before.
    const kept = await bindSecret(store, fakeKms, { secret: 's', value: new TextEncoder().encode('v2'), allow, provider: 'aws-kms', kmsKeyId: 'alias/k' });
    expect(kept.mode).toBe('kms-recipient');
  });
});
