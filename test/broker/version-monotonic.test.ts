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
import { bindSecret, pcrSet, rotateSecret, unbindSecret } from '../../broker/admin.js';
import { APPROVED } from '../support/enclave.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-version-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const value = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('secret versions never repeat', () => {
  it('a secret bound again after unbind continues above the highest version it ever had, also for a fresh store handle', async () => {
    const store = await FileStore.open(join(dir, 'store'));
    const local = await LocalKeyProvider.open(join(dir, 'local.key'));
    const providers = new Map([['local' as const, local]]);
    const req = { secret: 'db', allow: [pcrSet(APPROVED)], provider: 'local' as const };
    expect((await bindSecret(store, local, { ...req, value: value('v1') })).version).toBe(1);
    expect((await rotateSecret(store, providers, 'db', value('v2'))).version).toBe(2);
    await unbindSecret(store, 'db');
    expect((await store.refresh()).bindings.has('db')).toBe(false);
    expect((await bindSecret(store, local, { ...req, value: value('v3') })).version).toBe(3);

    await unbindSecret(store, 'db');
    const fresh = await FileStore.open(join(dir, 'store'));
    expect((await bindSecret(fresh, local, { ...req, value: value('v4') })).version).toBe(4);
    // A retired version is not a binding: nothing is released for it and `list` does not show it.
    expect([...(await fresh.refresh()).bindings.keys()]).toEqual(['db']);
    expect(fresh.problems()).toEqual([]);
  });
});
