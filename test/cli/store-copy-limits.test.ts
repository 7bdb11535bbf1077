/**
 * `keygate store copy` with a source that is valid entry by entry but does not
 * fit the destination (an item larger than DynamoDB takes), a destination that
 * fails mid-copy, and a source entry that is not a regular file (a FIFO would
 * block a read forever). Ported from the adversarial review's reproductions.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseBinding } from '../../broker/policy/schema.js';
import { DynamoDbStore, DynamoDbStoreError, initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import { FileStore } from '../../broker/store/file-store.js';
import type { DynamoDbStoreSettings } from '../../broker/store/open-store.js';
import { copyStore, StoreCopyError } from '../../broker/ops/store-copy.js';
import { APPROVED } from '../support/enclave.js';
import { BIN, cli } from '../support/cli.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let savedEnv: NodeJS.ProcessEnv;
const tempDir = tempDirs('kg-copy-limits-');
beforeAll(async () => {
  moto = await startMoto();
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
}, 120_000);
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
});
afterEach(() => {
  vi.restoreAllMocks();
});

let w: { from: string; config: string; settings: DynamoDbStoreSettings };
beforeEach(async () => {
  const dir = tempDir();
  const settings: DynamoDbStoreSettings = { kind: 'dynamodb', table: uniqueName('kg-copy-limits'), consistency: { maxStalenessMs: 0 } };
  await initDynamoDbStoreTable(settings);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ store: settings, stateDir: join(dir, 'ddb-state') }));
  const from = join(dir, 'file-store');
  mkdirSync(join(from, 'bindings'), { recursive: true });
  mkdirSync(join(from, 'baselines'), { recursive: true });
  w = { from, config: join(dir, 'config.json'), settings };
}, 60_000);

function writeBinding(secret: string, ciphertextBytes = 48): void {
  const b = parseBinding({
    secret, version: 1, provider: 'aws-kms', kmsKeyId: 'alias/k', ciphertext: Buffer.alloc(ciphertextBytes, 7).toString('base64'), text: true,
    allow: [{ pcrs: { 0: APPROVED[0], 1: APPROVED[1], 2: APPROVED[2] } }], allowDebug: false, ttlSeconds: 60, revoked: false,
    createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z',
  });
  writeFileSync(join(w.from, 'bindings', `${secret}.json`), JSON.stringify(b));
}

async function destinationBindings(): Promise<string[]> {
  const dest = await DynamoDbStore.open(w.settings);
  try {
    return [...dest.snapshot().bindings.keys()].sort();
  } finally {
    dest.close();
  }
}

interface CopyJson {
  copied?: Array<{ kind: string; name: string }>;
  error?: { code: string; message: string };
  conflicts?: Array<{ code: string; kind: string; name: string }>;
}

describe('store copy: a source that does not fit the destination', () => {
  it('a binding too large for a DynamoDB item is refused (STORE_COPY_TOO_LARGE, named) before anything is written', async () => {
    for (let i = 0; i < 30; i++) writeBinding(`s${String(i).padStart(2, '0')}`);
    writeBinding('zz-huge', 450 * 1024); // valid by the schema, larger than a DynamoDB item
    const run = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config, '--json']);
    const json = JSON.parse(run.stdout) as CopyJson;
    expect({ status: run.status, code: json.error?.code, conflicts: json.conflicts?.map((c) => [c.code, c.kind, c.name]), copied: json.copied }).toEqual({
      status: 1, code: 'STORE_COPY_TOO_LARGE', conflicts: [['TOO_LARGE', 'binding', 'zz-huge']], copied: [],
    });
    expect(await destinationBindings()).toEqual([]);
  }, 120_000);

  it('items that fit one by one but not in one transaction are split into batches that fit (4 MB per transaction)', async () => {
    // 16 bindings of ~300 KB each fit an item, but 16 in one transaction exceed 4 MB.
    for (let i = 0; i < 16; i++) writeBinding(`big${String(i).padStart(2, '0')}`, 220 * 1024);
    const run = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config, '--json']);
    expect(run.status, run.stderr).toBe(0);
    expect((await destinationBindings()).length).toBe(16);
  }, 120_000);

  it('a backend failure mid-copy: STORE_COPY_INTERRUPTED, exit 1, the report lists what was written; a re-run completes it', async () => {
    for (let i = 0; i < 30; i++) writeBinding(`s${String(i).padStart(2, '0')}`);
    // The destination's third update (plan, batch 1, batch 2) fails as an unreachable DynamoDB would.
    const original = DynamoDbStore.prototype.update;
    let calls = 0;
    vi.spyOn(DynamoDbStore.prototype, 'update').mockImplementation(function (this: DynamoDbStore, fn) {
      calls += 1;
      if (calls === 3) return Promise.reject(new DynamoDbStoreError('STORE_UNAVAILABLE', 'simulated: the table is unreachable'));
      return original.call(this, fn) as never;
    });
    const run = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config, '--json']);
    const json = JSON.parse(run.stdout) as CopyJson;
    expect({ status: run.status, code: json.error?.code, copied: json.copied?.length }).toEqual({ status: 1, code: 'STORE_COPY_INTERRUPTED', copied: 25 });
    expect(json.error?.message).toMatch(/STORE_UNAVAILABLE.*simulated/);
    expect(await destinationBindings()).toEqual(json.copied!.map((c) => c.name).sort());
    vi.restoreAllMocks();
    const again = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config, '--json']);
    const done = JSON.parse(again.stdout) as CopyJson & { unchanged: unknown[] };
    expect({ status: again.status, copied: done.copied?.length, unchanged: done.unchanged.length }).toEqual({ status: 0, copied: 5, unchanged: 25 });
    expect((await destinationBindings()).length).toBe(30);
  }, 120_000);

  it('the text report of an interrupted copy lists each item written before the failure (exit 1)', async () => {
    for (let i = 0; i < 27; i++) writeBinding(`t${String(i).padStart(2, '0')}`);
    const original = DynamoDbStore.prototype.update;
    let calls = 0;
    vi.spyOn(DynamoDbStore.prototype, 'update').mockImplementation(function (this: DynamoDbStore, fn) {
      calls += 1;
      if (calls === 3) return Promise.reject(new DynamoDbStoreError('STORE_UNAVAILABLE', 'simulated'));
      return original.call(this, fn) as never;
    });
    const run = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config]);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/STORE_COPY_INTERRUPTED/);
    expect(run.stdout).toMatch(/^copied binding t00 version 1 \(aws-kms\)$/m);
    expect(run.stdout).toMatch(/^copied binding t24 version 1 \(aws-kms\)$/m);
    expect(run.stdout).not.toMatch(/t25/);
  }, 120_000);

  it('copyStore: StoreCopyError.copied holds exactly what the committed batches wrote', async () => {
    for (let i = 0; i < 3; i++) writeBinding(`t${i}`);
    const source = await FileStore.open(w.from);
    const dest = await DynamoDbStore.open(w.settings);
    const original = DynamoDbStore.prototype.update;
    let calls = 0;
    vi.spyOn(dest, 'update').mockImplementation((fn) => {
      calls += 1;
      if (calls === 3) return Promise.reject(new DynamoDbStoreError('STORE_UNAVAILABLE', 'simulated'));
      return original.call(dest, fn) as never;
    });
    try {
      const err = await copyStore(source, dest, { destinationShared: true, batchItems: 2 }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(StoreCopyError);
      expect({ code: (err as StoreCopyError).code, copied: (err as StoreCopyError).copied.map((c) => c.name) }).toEqual({ code: 'STORE_COPY_INTERRUPTED', copied: ['t0', 't1'] });
    } finally {
      dest.close();
    }
  }, 120_000);
});

describe('store copy: a source entry that is not a regular file', () => {
  it('a FIFO in place of a binding file: refused at once with the file named (STORE_COPY_SOURCE_INVALID), exit 1, not a hang', () => {
    writeBinding('ok');
    execFileSync('mkfifo', [join(w.from, 'bindings', 'evil.json')]);
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [BIN, 'store', 'copy', '--from', w.from, '--to-config', w.config], { encoding: 'utf8', timeout: 30_000, env: process.env });
    expect({ status: r.status, signal: r.signal, fast: Date.now() - t0 < 29_000 }).toEqual({ status: 1, signal: null, fast: true });
    expect(r.stderr).toMatch(/STORE_COPY_SOURCE_INVALID/);
    expect(r.stderr).toMatch(/bindings\/evil\.json: not a regular file/);
  }, 60_000);

  it('a symlink to /dev/zero in place of a binding file: refused with the file named, exit 1', async () => {
    writeBinding('ok');
    symlinkSync('/dev/zero', join(w.from, 'bindings', 'zero.json'));
    const run = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config]);
    expect(run.status).toBe(1);
    expect(run.stderr).toMatch(/STORE_COPY_SOURCE_INVALID/);
    expect(run.stderr).toMatch(/bindings\/zero\.json: a symbolic link/);
    expect(await destinationBindings()).toEqual([]);
  }, 60_000);
});
