/**
 * One behaviour suite for every store backend (the file store and DynamoDB,
 * on moto_server): both must keep the same semantics. Then what only the
 * shared backend promises: no lost update across separate clients, a bounded
 * staleness, fail-closed items, and a coded error (never an empty snapshot)
 * when DynamoDB is unreachable.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeleteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { FileStore } from '../../broker/store/file-store.js';
import { DynamoDbStore, DynamoDbStoreError, initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import type { DynamoDbStoreSettings } from '../../broker/store/open-store.js';
import type { BindingStore, StoreProblem } from '../../broker/store/store.js';
import { parseBinding } from '../../broker/policy/schema.js';
import { parseBaseline } from '../../broker/policy/baseline.js';
import type { Binding } from '../../broker/policy/types.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { bindSecret, pcrSet, rotateSecret, unbindSecret } from '../../broker/admin.js';
import { APPROVED } from '../support/enclave.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';

type RawKind = 'binding' | 'baseline' | 'revocations';

/** One backend under test: a fresh, empty store per test, opened as many times as a test needs. */
interface Backend {
  setup(): Promise<void>;
  teardown(): Promise<void>;
  open(options?: { onProblem?: (p: StoreProblem) => void }): Promise<BindingStore>;
  /** Writes an item/file behind the store's back (an operator's edit, a damaged copy). */
  writeRaw(kind: RawKind, name: string, text: string): Promise<void>;
  removeRaw(kind: RawKind, name: string): Promise<void>;
  /** How problems name the item. */
  problemFile(kind: RawKind, name: string): string;
  /** Names of every stored binding entry (files, temp files included; items). */
  rawBindingNames(): Promise<string[]>;
}

let moto: Moto;
let savedEnv: NodeJS.ProcessEnv;
beforeAll(async () => {
  moto = await startMoto();
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
});
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
});

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-store-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function fileBackend(): Backend {
  const root = (): string => join(dir, 'store');
  const path = (kind: RawKind, name: string): string => (kind === 'revocations' ? join(root(), 'revocations.json') : join(root(), `${kind}s`, `${name}.json`));
  return {
    setup: async () => {},
    teardown: async () => {},
    open: (options = {}) => FileStore.open(root(), { ...options, fullScanIntervalMs: 0 }),
    writeRaw: async (kind, name, text) => writeFileSync(path(kind, name), text),
    removeRaw: async (kind, name) => rmSync(path(kind, name)),
    problemFile: path,
    rawBindingNames: async () => readdirSync(join(root(), 'bindings')).filter((n) => n !== '.retired'),
  };
}

const opened: DynamoDbStore[] = [];
function dynamoBackend(): Backend {
  let settings: DynamoDbStoreSettings = { kind: 'dynamodb', table: 'unset' };
  const client = (): DynamoDBClient => new DynamoDBClient({});
  const sk = (kind: RawKind, name: string): string => (kind === 'revocations' ? 'revocations' : `${kind}#${name}`);
  /** An out-of-band edit that follows the layout: it bumps the store version, as keygate's own writes do. */
  const bump = (ddb: DynamoDBClient): Promise<unknown> =>
    ddb.send(new UpdateItemCommand({ TableName: settings.table, Key: { pk: { S: 'store' }, sk: { S: 'version' } }, UpdateExpression: 'ADD v :one', ExpressionAttributeValues: { ':one': { N: '1' } } }));
  return {
    setup: async () => {
      settings = { kind: 'dynamodb', table: uniqueName('keygate-store'), consistency: { maxStalenessMs: 0 } };
      await initDynamoDbStoreTable(settings);
    },
    teardown: async () => {
      for (const s of opened.splice(0)) s.close();
    },
    open: async (options = {}) => {
      const store = await DynamoDbStore.open(settings, options);
      opened.push(store);
      return store;
    },
    writeRaw: async (kind, name, text) => {
      const ddb = client();
      await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: 'store' }, sk: { S: sk(kind, name) }, doc: { S: text } } }));
      await bump(ddb);
      ddb.destroy();
    },
    removeRaw: async (kind, name) => {
      const ddb = client();
      await ddb.send(new DeleteItemCommand({ TableName: settings.table, Key: { pk: { S: 'store' }, sk: { S: sk(kind, name) } } }));
      await bump(ddb);
      ddb.destroy();
    },
    problemFile: (kind, name) => `dynamodb:${settings.table}/${kind === 'revocations' ? 'revocations' : `${kind}s/${name}`}`,
    rawBindingNames: async () => [...(await DynamoDbStore.open(settings).then((s) => (opened.push(s), s.snapshot().bindings.keys())))].map((n) => `${n}.json`),
  };
}

const h = (b: number): string => b.toString(16).padStart(2, '0').repeat(48);
function binding(secret: string, version = 1): Binding {
  return parseBinding({
    secret, version, provider: 'local', ciphertext: 'AAAA', text: true, allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) } }],
    allowDebug: false, ttlSeconds: 60, revoked: false, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z',
  });
}
const value = (s: string): Uint8Array => new TextEncoder().encode(s);

describe.each([
  ['file', fileBackend()],
  ['dynamodb', dynamoBackend()],
])('%s store', (_kind, backend) => {
  beforeEach(() => backend.setup());
  afterEach(() => backend.teardown());

  it('writes atomically (no stray entries), and another handle sees changes', async () => {
    const a = await backend.open();
    const b = await backend.open();
    await a.update(async (_s, tx) => tx.putBinding(binding('one')));
    expect(await backend.rawBindingNames()).toEqual(['one.json']);
    expect((await b.refresh()).bindings.get('one')?.version).toBe(1);
    const gen = b.snapshot().generation;
    expect((await b.refresh()).generation).toBe(gen); // nothing changed: same snapshot
    await a.update(async (_s, tx) => tx.deleteBinding('one'));
    expect((await b.refresh()).bindings.size).toBe(0);
  });

  it('serialises concurrent read-modify-write updates from several handles so none is lost (4 x 3 increments)', async () => {
    const stores = await Promise.all([1, 2, 3, 4].map(() => backend.open()));
    await stores[0]!.update(async (_s, tx) => tx.putBinding(binding('counter')));
    await Promise.all(
      stores.flatMap((s) =>
        [1, 2, 3].map(() =>
          s.update(async (current, tx) => {
            const b = current.bindings.get('counter')!;
            await tx.putBinding(parseBinding({ ...b, version: b.version + 1 }));
          }),
        ),
      ),
    );
    expect((await stores[0]!.refresh()).bindings.get('counter')!.version).toBe(13);
  });

  it('reports a corrupt or mismatched entry and fails closed: no last good copy is kept', async () => {
    const problems: string[] = [];
    const store = await backend.open({ onProblem: (p) => problems.push(p.message) });
    await store.update(async (_s, tx) => tx.putBinding(binding('db')));
    await store.update(async (_s, tx) => tx.putRevocations({ pcr0: [h(9)], instances: [], baselines: [] }));
    await backend.writeRaw('binding', 'db', JSON.stringify({ ...binding('db'), ttlSeconds: -1 }));
    expect((await store.refresh()).bindings.has('db')).toBe(false); // the admin's edit did not take effect: the name is unavailable
    expect(store.snapshot().invalidBindings).toEqual(new Set(['db']));
    expect(problems.at(-1)).toMatch(/db(\.json)?\.ttlSeconds/);
    await backend.writeRaw('binding', 'other', JSON.stringify(binding('db')));
    await store.refresh();
    expect(problems.at(-1)).toMatch(/must equal the (file|item) name/);
    expect(store.snapshot().bindings.has('other')).toBe(false);
    expect(store.snapshot().invalidBindings).toEqual(new Set(['db', 'other']));
    expect(store.snapshot().revocationsProblem).toBeUndefined();
    await backend.writeRaw('revocations', '', 'not json');
    await store.refresh();
    expect(problems.at(-1)).toMatch(/invalid JSON/);
    expect(store.snapshot().revocationsProblem?.file).toBe(backend.problemFile('revocations', ''));
    expect(store.problems()).toHaveLength(3);
    // A fresh handle sees the same: nothing from the broken entries.
    const fresh = (await backend.open()).snapshot();
    expect([fresh.bindings.size, [...fresh.invalidBindings].sort(), fresh.revocationsProblem?.message]).toEqual([0, ['db', 'other'], expect.stringMatching(/invalid JSON/)]);
    // Fixed entries count again; a removed broken entry is no longer a problem.
    await store.update(async (_s, tx) => tx.putBinding(binding('db')));
    await backend.removeRaw('binding', 'other');
    await backend.removeRaw('revocations', '');
    const after = await store.refresh();
    expect([after.bindings.has('db'), after.invalidBindings.size, after.revocationsProblem, store.problems()]).toEqual([true, 0, undefined, []]);
  });

  it('leaves out a baseline that fails validation, so rules naming it do not count', async () => {
    const store = await backend.open();
    const good = { formatVersion: 1, name: 'build-1', pcrs: { 0: h(1), 1: h(2), 2: h(3) }, builder: 'ci', createdAt: '2026-01-01T00:00:00Z', source: 'eif', approvals: [] } as const;
    await store.update(async (_s, tx) => tx.putBaseline(parseBaseline(good)));
    expect(store.snapshot().baselines.has('build-1')).toBe(true);
    await backend.writeRaw('baseline', 'build-1', JSON.stringify({ ...good, pcrs: { ...good.pcrs, 0: 'nope' } }));
    expect((await store.refresh()).baselines.has('build-1')).toBe(false);
    expect(store.problems().map((p) => p.file)).toEqual([backend.problemFile('baseline', 'build-1')]);
  });

  it('refuses to write an invalid binding, and writes nothing', async () => {
    const store = await backend.open();
    await expect(store.update(async (_s, tx) => tx.putBinding({ ...binding('x'), version: 0 }))).rejects.toMatchObject({ code: 'SCHEMA_INVALID' });
    expect(await backend.rawBindingNames()).toEqual([]);
  });

  it('a secret bound again after unbind continues above the highest version it ever had, also for a fresh handle', async () => {
    const store = await backend.open();
    const local = await LocalKeyProvider.open(join(dir, 'local.key'));
    const providers = new Map([['local' as const, local]]);
    const req = { secret: 'db', allow: [pcrSet(APPROVED)], provider: 'local' as const };
    expect((await bindSecret(store, local, { ...req, value: value('v1') })).version).toBe(1);
    expect((await rotateSecret(store, providers, 'db', value('v2'))).version).toBe(2);
    await unbindSecret(store, 'db');
    expect((await store.refresh()).bindings.has('db')).toBe(false);
    expect((await bindSecret(store, local, { ...req, value: value('v3') })).version).toBe(3);

    await unbindSecret(store, 'db');
    const fresh = await backend.open();
    expect((await bindSecret(fresh, local, { ...req, value: value('v4') })).version).toBe(4);
    // A retired version is not a binding: nothing is released for it and `list` does not show it.
    expect([...(await fresh.refresh()).bindings.keys()]).toEqual(['db']);
    expect(fresh.problems()).toEqual([]);
  });

  it.each([
    ['still names its version', '{"secret":"api","version":3,"provider":"local"}', 4],
    ['is cut off before its version can be read', '{"secret":"api","vers', undefined],
  ])('unbinding a damaged binding that %s still reserves a version above it', async (_what, damaged, expected) => {
    const store = await backend.open();
    const local = await LocalKeyProvider.open(join(dir, 'local.key'));
    const providers = new Map([['local' as const, local]]);
    const req = { secret: 'api', allow: [pcrSet(APPROVED)], provider: 'local' as const };
    await bindSecret(store, local, { ...req, value: value('v1') });
    await rotateSecret(store, providers, 'api', value('v2'));
    expect((await rotateSecret(store, providers, 'api', value('v3'))).version).toBe(3);
    await backend.writeRaw('binding', 'api', damaged);
    await store.rescan();
    expect(store.snapshot().invalidBindings.has('api')).toBe(true);
    await unbindSecret(store, 'api'); // the way out the error message points to
    const again = await bindSecret(store, local, { ...req, value: value('new') });
    if (expected !== undefined) expect(again.version).toBe(expected);
    // Unknown version: the reservation jumps above anything a history of +1 rotations can have reached.
    else expect(again.version).toBeGreaterThan(1_000_000_000);
  });
});

describe('dynamodb store: several replicas', () => {
  let settings: DynamoDbStoreSettings;
  beforeEach(async () => {
    settings = { kind: 'dynamodb', table: uniqueName('keygate-replicas') };
    await initDynamoDbStoreTable(settings);
  });
  afterEach(() => {
    for (const s of opened.splice(0)) s.close();
  });
  const open = async (s: DynamoDbStoreSettings = settings, options: { onProblem?: (p: StoreProblem) => void } = {}): Promise<DynamoDbStore> => {
    const store = await DynamoDbStore.open(s, options);
    opened.push(store);
    return store;
  };

  it('a change made through one replica is seen by another within maxStalenessMs (1000) plus one read', async () => {
    const admin = await open();
    const replica = await open({ ...settings, consistency: { maxStalenessMs: 1000 } });
    await admin.update(async (_s, tx) => tx.putBinding(binding('db')));
    await replica.refresh(); // may still be inside the window of the open's read
    const changedAt = performance.now();
    await admin.update(async (current, tx) => tx.putBinding(parseBinding({ ...current.bindings.get('db')!, revoked: true })));
    let seenAt = 0;
    while (!(await replica.refresh()).bindings.get('db')?.revoked) {
      if (performance.now() - changedAt > 15_000) throw new Error('the revocation was not seen within 15 s');
      await new Promise((r) => setImmediate(r));
    }
    seenAt = performance.now();
    // The bound: one window plus the one read that notices (generous for a loaded machine).
    expect(seenAt - changedAt).toBeLessThan(1000 + 4000);
  });

  it('with maxStalenessMs 0, concurrent refreshes share one consistent read and see a change at once', async () => {
    const admin = await open();
    const replica = await open({ ...settings, consistency: { maxStalenessMs: 0 } });
    await admin.update(async (_s, tx) => tx.putBinding(binding('db')));
    const reads = Array.from({ length: 20 }, () => replica.refresh());
    expect(new Set(reads).size).toBe(1); // one shared promise: one read
    expect((await reads[0]!).bindings.get('db')?.version).toBe(1);
  });

  it('a corrupt binding item denies only its name; a corrupt revocations item sets revocationsProblem', async () => {
    const admin = await open();
    await admin.update(async (_s, tx) => {
      await tx.putBinding(binding('db'));
      await tx.putBinding(binding('other'));
    });
    const ddb = new DynamoDBClient({});
    try {
      await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: 'store' }, sk: { S: 'binding#db' }, doc: { N: '7' } } }));
      const problems: StoreProblem[] = [];
      const replica = await open(settings, { onProblem: (p) => problems.push(p) });
      expect([...replica.snapshot().bindings.keys()]).toEqual(['other']);
      expect(replica.snapshot().invalidBindings).toEqual(new Set(['db']));
      expect(problems).toEqual([{ file: `dynamodb:${settings.table}/bindings/db`, message: expect.stringMatching(/no string attribute "doc"/) }]);
      expect(replica.snapshot().revocationsProblem).toBeUndefined();
      await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: 'store' }, sk: { S: 'revocations' }, doc: { S: '{"pcr0":["zz"],"instances":[],"baselines":[]}' } } }));
      const snap = await replica.rescan();
      expect(snap.revocationsProblem).toMatchObject({ file: `dynamodb:${settings.table}/revocations`, message: expect.stringMatching(/revocations\.pcr0\[0\]/) });
      expect(snap.bindings.has('other')).toBe(true); // still loaded: the broker refuses everything on revocationsProblem itself
    } finally {
      ddb.destroy();
    }
  });

  it.each(['revocations#old-backup', 'revocationz', 'policy#db'])('an item keygate does not write (%s) cannot replace the revocation list: it fails closed', async (stray) => {
    const admin = await open();
    await admin.update(async (_s, tx) => {
      await tx.putBinding(binding('db'));
      await tx.putRevocations({ pcr0: [h(1)], instances: [], baselines: [] });
    });
    const ddb = new DynamoDBClient({});
    try {
      // An empty list under a key that sorts after "revocations", with the version bumped as the README asks of manual edits.
      await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: 'store' }, sk: { S: stray }, doc: { S: '{}' } } }));
      await ddb.send(new UpdateItemCommand({ TableName: settings.table, Key: { pk: { S: 'store' }, sk: { S: 'version' } }, UpdateExpression: 'SET v = v + :one', ExpressionAttributeValues: { ':one': { N: '1' } } }));
      const replica = await open();
      const snap = await replica.refresh();
      expect(snap.revocations.pcr0).toEqual([h(1)]);
      expect(snap.revocationsProblem).toMatchObject({ file: `dynamodb:${settings.table}/${stray}`, message: expect.stringMatching(/not an item keygate writes/) });
    } finally {
      ddb.destroy();
    }
  });

  it('unreachable DynamoDB: refresh and update fail with STORE_UNAVAILABLE, the last snapshot stays, never an empty one', async () => {
    const own = await startMoto();
    try {
      const s: DynamoDbStoreSettings = { kind: 'dynamodb', table: uniqueName('keygate-down'), endpoint: own.endpoint, consistency: { maxStalenessMs: 0 } };
      await initDynamoDbStoreTable(s);
      const store = await DynamoDbStore.open(s, { requestTimeoutMs: 3000 });
      opened.push(store);
      await store.update(async (_x, tx) => tx.putBinding(binding('db')));
      await own.stop();
      const err = await store.refresh().then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(DynamoDbStoreError);
      expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE' });
      await expect(store.update(async (_x, tx) => tx.putBinding(binding('x')))).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
      await expect(DynamoDbStore.open(s, { requestTimeoutMs: 3000 })).rejects.toMatchObject({ code: 'STORE_UNAVAILABLE' });
      expect(store.snapshot().bindings.has('db')).toBe(true);
    } finally {
      await own.stop();
    }
  });

  it('a write whose call fails after the read (DynamoDB gone mid-update) says its outcome is unknown and that a re-run is safe', async () => {
    const own = await startMoto();
    try {
      const s: DynamoDbStoreSettings = { kind: 'dynamodb', table: uniqueName('keygate-unknown'), endpoint: own.endpoint, consistency: { maxStalenessMs: 0 } };
      await initDynamoDbStoreTable(s);
      const store = await DynamoDbStore.open(s, { requestTimeoutMs: 3000 });
      opened.push(store);
      const err = await store
        .update(async (_x, tx) => {
          await own.stop(); // the read is done; the transaction is sent to a server that is gone
          await tx.putBinding(binding('db'));
        })
        .then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(DynamoDbStoreError);
      expect(err).toMatchObject({ code: 'STORE_UNAVAILABLE', message: expect.stringMatching(/outcome is unknown: the change may have been committed.*Running the command again is safe/) });
    } finally {
      await own.stop();
    }
  });

  it('a restored (or re-created) table that reaches the same version number with other content is reloaded: the version item carries a token per write', async () => {
    const admin = await open();
    const replica = await open({ ...settings, consistency: { maxStalenessMs: 0 } });
    await admin.update(async (_s, tx) => tx.putBinding(binding('db')));
    expect((await replica.refresh()).bindings.get('db')?.version).toBe(1);
    const ddb = new DynamoDBClient({});
    try {
      const versionKey = { pk: { S: 'store' }, sk: { S: 'version' } };
      const number = (await ddb.send(new GetItemCommand({ TableName: settings.table, Key: versionKey, ConsistentRead: true }))).Item!.v!;
      // A restore: other content, and the version item back at the same number, set by another write (another token).
      await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: 'store' }, sk: { S: 'binding#db' }, doc: { S: JSON.stringify(binding('db', 5)) } } }));
      await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { ...versionKey, v: number, t: { S: 'restored-write' } } }));
      expect((await replica.refresh()).bindings.get('db')?.version).toBe(5);
    } finally {
      ddb.destroy();
    }
  });

  it('an update computed before such a restore is not committed over it: it re-runs on the restored state', async () => {
    const admin = await open();
    await admin.update(async (_s, tx) => tx.putBinding(binding('db')));
    const ddb = new DynamoDBClient({});
    try {
      const versionKey = { pk: { S: 'store' }, sk: { S: 'version' } };
      const number = (await ddb.send(new GetItemCommand({ TableName: settings.table, Key: versionKey, ConsistentRead: true }))).Item!.v!;
      const seen: Array<number | undefined> = [];
      await admin.update(async (current, tx) => {
        seen.push(current.bindings.get('db')?.version);
        if (seen.length === 1) {
          // Between this update's read and its write, the table is restored to the same number with other content.
          await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: 'store' }, sk: { S: 'binding#db' }, doc: { S: JSON.stringify(binding('db', 5)) } } }));
          await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { ...versionKey, v: number, t: { S: 'restored-write' } } }));
        }
        await tx.putBinding(binding('other'));
      });
      expect(seen).toEqual([1, 5]);
      expect((await admin.rescan()).bindings.get('db')?.version).toBe(5);
    } finally {
      ddb.destroy();
    }
  });

  it('an update writing more than 99 items fails with STORE_TOO_LARGE and writes nothing', async () => {
    const store = await open();
    await expect(
      store.update(async (_s, tx) => {
        for (let i = 0; i < 100; i++) await tx.putBinding(binding(`s${i}`));
      }),
    ).rejects.toMatchObject({ code: 'STORE_TOO_LARGE' });
    expect((await store.rescan()).bindings.size).toBe(0);
  });
});
