/**
 * The file store notices a keygate write even where directory timestamps are coarse. The broker's cheap
 * per-release check stats the bindings and baselines directories; a rename into a directory within the same
 * timestamp tick as the broker's last stat leaves (mtime, inode, size) of the directory unchanged on
 * filesystems or kernels without fine-grained timestamps (Linux before 6.13 uses the jiffy), so a `keygate
 * revoke SECRET` (a rewrite of bindings/SECRET.json) could stay unseen until the periodic full scan. Here
 * node:fs/promises' stat is wrapped to report a frozen mtime for directories (the worst case: every write in
 * one tick), with the full scan pushed out of reach, and a second FileStore (as the CLI is) writes.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../broker/store/file-store.js';
import { parseBinding } from '../../broker/policy/schema.js';
import type { Binding } from '../../broker/policy/types.js';
import { h } from '../support/enclave.js';

/** A directory whose timestamps never move: as if every write landed in the tick of the broker's last stat. */
function frozen<T>(info: T): T {
  const i = info as { isDirectory?: () => boolean };
  if (i && typeof i.isDirectory === 'function' && i.isDirectory()) Object.assign(i, { mtimeNs: 0n, mtimeMs: 0n, ctimeNs: 0n, ctimeMs: 0n });
  return info;
}

// Both the synchronous and the promise stat: whichever the store's check uses.
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const statSync = ((...args: Parameters<typeof real.statSync>) => frozen(real.statSync(...args))) as typeof real.statSync;
  return { ...real, statSync, default: { ...real, statSync } };
});
vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const stat = (async (...args: Parameters<typeof real.stat>) => frozen(await real.stat(...args))) as typeof real.stat;
  return { ...real, stat, default: { ...real, stat } };
});

function binding(secret: string, version: number, revoked: boolean): Binding {
  return parseBinding({
    secret, version, provider: 'local', ciphertext: 'AAAA', text: true, allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) } }],
    allowDebug: false, ttlSeconds: 60, revoked, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z',
  });
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-coarse-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('file store with coarse directory timestamps', () => {
  it('a binding rewritten by another process (revoked) is seen by the next refresh, not only by the full scan', async () => {
    const broker = await FileStore.open(dir, { fullScanIntervalMs: 3_600_000 });
    const cli = await FileStore.open(dir, { fullScanIntervalMs: 3_600_000 });
    await cli.update(async (_s, tx) => tx.putBinding(binding('db', 1, false)));
    expect((await broker.refresh()).bindings.get('db')?.revoked).toBe(false);
    await cli.update(async (_s, tx) => tx.putBinding(binding('db', 1, true)));
    expect((await broker.refresh()).bindings.get('db')?.revoked).toBe(true);
  });

  it('a binding added, then unbound, by another process is seen by the next refresh', async () => {
    const broker = await FileStore.open(dir, { fullScanIntervalMs: 3_600_000 });
    const cli = await FileStore.open(dir, { fullScanIntervalMs: 3_600_000 });
    expect((await broker.refresh()).bindings.size).toBe(0);
    await cli.update(async (_s, tx) => tx.putBinding(binding('other', 1, false)));
    expect([...(await broker.refresh()).bindings.keys()]).toEqual(['other']);
    await cli.update(async (_s, tx) => tx.deleteBinding('other'));
    expect((await broker.refresh()).bindings.size).toBe(0);
  });
});

describe('file store: the .changes marker', () => {
  it('a FIFO planted as .changes does not block an update (it fails instead of waiting for a reader)', { timeout: 30_000 }, async () => {
    const cli = await FileStore.open(dir, { fullScanIntervalMs: 3_600_000 });
    execFileSync('mkfifo', [join(dir, '.changes')]);
    const outcome = await Promise.race([
      cli.update(async (_s, tx) => tx.putBinding(binding('db', 1, false))).then(
        () => 'resolved',
        (err: NodeJS.ErrnoException) => `rejected ${err.code}`,
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), 10_000)),
    ]);
    expect(outcome).toBe('rejected ENXIO');
  });

  it('a symlink planted as .changes is not followed', async () => {
    const cli = await FileStore.open(dir, { fullScanIntervalMs: 3_600_000 });
    const target = join(dir, 'elsewhere.txt');
    writeFileSync(target, 'untouched');
    symlinkSync(target, join(dir, '.changes'));
    await expect(cli.update(async (_s, tx) => tx.putBinding(binding('db', 1, false)))).rejects.toMatchObject({ code: 'ELOOP' });
    expect(readFileSync(target, 'utf8')).toBe('untouched');
  });
});
