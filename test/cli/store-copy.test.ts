/**
 * `keygate store copy --from FILE_STORE_DIR --to-config CONFIG` against
 * moto_server (DynamoDB and KMS): everything the file store holds (bindings
 * as stored, reserved versions of unbound names, baselines with approvals,
 * revocations) lands in the DynamoDB store; a second run copies nothing; an
 * item that differs is a conflict and nothing is written; a source file that
 * fails validation is refused by name; local-provider bindings are refused
 * unless --allow-local; and a broker on the DynamoDB store releases a copied
 * secret and honours the copied revocations.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { bindSecret, pcrSet, revokeIdentities, unbindSecret } from '../../broker/admin.js';
import { resolveConfig } from '../../broker/config.js';
import { AwsKmsKeyProvider } from '../../broker/kms/aws-kms.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { openProviders } from '../../broker/state.js';
import { FileStore } from '../../broker/store/file-store.js';
import { DynamoDbStore, initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import type { DynamoDbStoreSettings } from '../../broker/store/open-store.js';
import { parseBaseline, type Baseline } from '../../broker/policy/baseline.js';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, h, TestEnclave, valueOf } from '../support/enclave.js';
import { cli } from '../support/cli.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let pki: TestPki;
let savedEnv: NodeJS.ProcessEnv;
const KMS_KEY = 'alias/keygate-copy-test';
const tempDir = tempDirs('keygate-store-copy-');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
  const kms = new KMSClient({});
  const created = await kms.send(new CreateKeyCommand({ Description: 'keygate store copy (test)' }));
  await kms.send(new CreateAliasCommand({ AliasName: KMS_KEY, TargetKeyId: created.KeyMetadata!.KeyId! }));
  kms.destroy();
}, 120_000);
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
});

/** One test's world: a file store, a DynamoDB table and a config naming it. */
interface World {
  readonly dir: string;
  readonly from: string;
  readonly config: string;
  readonly settings: DynamoDbStoreSettings;
}
let w: World;
beforeEach(async () => {
  const dir = tempDir();
  const settings: DynamoDbStoreSettings = { kind: 'dynamodb', table: uniqueName('keygate-copy'), consistency: { maxStalenessMs: 0 } };
  await initDynamoDbStoreTable(settings);
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ store: settings, stateDir: join(dir, 'ddb-state') }));
  w = { dir, from: join(dir, 'file-store'), config: join(dir, 'config.json'), settings };
});

const baseline = (name: string, approvals: number): Baseline =>
  parseBaseline({
    formatVersion: 1, name, pcrs: { 0: APPROVED[0], 1: APPROVED[1], 2: APPROVED[2] }, builder: 'ci@test', createdAt: '2026-01-01T00:00:00.000Z', source: 'eif',
    approvals: Array.from({ length: approvals }, (_, i) => ({ kid: String(i).repeat(43), jws: `eyJh.eyJi.sig${i}` })),
  });

/** A file store with aws-kms bindings (one rotated, one unbound), a baseline with approvals and identity revocations. */
async function fillFileStore(): Promise<FileStore> {
  const store = await FileStore.open(w.from);
  const kms = new AwsKmsKeyProvider({});
  const bind = (secret: string, value: string, extra: Partial<Parameters<typeof bindSecret>[2]> = {}) =>
    bindSecret(store, kms, { secret, value: enc(value), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: KMS_KEY, ...extra });
  await bind('db', 'db-v1');
  await bind('db', 'db-v2'); // version 2
  await bind('api', 'api-v1', { baselines: [baseline('app-build', 2)] });
  await bind('gone', 'g1');
  await bind('gone', 'g2');
  await bind('gone', 'g3');
  await unbindSecret(store, 'gone'); // version 3 reserved in bindings/.retired
  await revokeIdentities(store, { pcr0: [h(0x66)], instances: ['i-0fedcba9876543210'] });
  kms.close();
  return store;
}

async function ddbStore(): Promise<DynamoDbStore> {
  return DynamoDbStore.open(w.settings);
}

interface CopyJson {
  copied: Array<{ kind: string; name: string; version?: number }>;
  unchanged: Array<{ kind: string; name: string }>;
  error?: { code: string; message: string };
  conflicts?: Array<{ code: string; kind: string; name: string }>;
}
async function copy(...extra: string[]): Promise<{ status: number | null; json: CopyJson; stdout: string; stderr: string }> {
  const run = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config, '--json', ...extra]);
  return { ...run, json: JSON.parse(run.stdout) as CopyJson };
}

describe('keygate store copy', () => {
  it('copies bindings as stored (ciphertext, versions), reserved versions, baselines with approvals and revocations; never a value', async () => {
    const source = await fillFileStore();
    const src = source.snapshot();
    const dry = await copy('--dry-run');
    expect(dry.status, dry.stderr).toBe(0);
    expect((await ddbStore()).snapshot().bindings.size).toBe(0); // a dry run writes nothing

    const run = await copy();
    expect(run.status, run.stderr).toBe(0);
    expect(run.json.copied.map((c) => [c.kind, c.name, c.version])).toEqual([
      ['revocations', 'revocations', undefined],
      ['baseline', 'app-build', undefined],
      ['reserved-version', 'gone', 3],
      ['binding', 'api', 1],
      ['binding', 'db', 2],
    ]);
    expect(run.json.copied).toEqual(dry.json.copied);
    // Names and versions only: no ciphertext, no value.
    for (const b of src.bindings.values()) expect(run.stdout).not.toContain(b.ciphertext);
    expect(run.stdout).not.toMatch(/db-v2|api-v1/);

    const dest = await ddbStore();
    const snap = dest.snapshot();
    expect(snap.bindings.get('db')).toEqual(src.bindings.get('db'));
    expect(snap.bindings.get('api')).toEqual(src.bindings.get('api'));
    expect(snap.baselines.get('app-build')?.approvals).toHaveLength(2);
    expect(snap.revocations).toEqual(src.revocations);
    expect(snap.bindings.has('gone')).toBe(false);
    // A name unbound in the file store never gets one of its versions again in DynamoDB.
    const kms = new AwsKmsKeyProvider({});
    const again = await bindSecret(dest, kms, { secret: 'gone', value: enc('g4'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: KMS_KEY });
    expect(again.version).toBe(4);
    kms.close();
    dest.close();

    // Text output names what was copied (and, the second time, that nothing was).
    const second = await cli(['store', 'copy', '--from', w.from, '--to-config', w.config]);
    expect(second.status, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/^nothing to copy: dynamodb:keygate-copy-\S+ already holds everything in .* \(\d+ item\(s\) unchanged\)$/m);
  });

  it('is idempotent: the second run copies nothing and says so', async () => {
    await fillFileStore();
    expect((await copy()).status).toBe(0);
    const second = await copy();
    expect(second.status).toBe(0);
    expect(second.json.copied).toEqual([]);
    expect(second.json.unchanged.map((u) => `${u.kind}:${u.name}`)).toEqual(['revocations:revocations', 'baseline:app-build', 'reserved-version:gone', 'binding:api', 'binding:db']);
  });

  it('an item the destination holds with other content is a conflict: never overwritten, nothing else copied, exit 1', async () => {
    await fillFileStore();
    const dest = await ddbStore();
    const kms = new AwsKmsKeyProvider({});
    const theirs = await bindSecret(dest, kms, { secret: 'db', value: enc('dynamo-db'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: KMS_KEY });
    kms.close();
    const run = await copy();
    expect(run.status).toBe(1);
    expect(run.json.error?.code).toBe('STORE_COPY_CONFLICT');
    expect(run.json.conflicts).toEqual([expect.objectContaining({ code: 'BINDING_DIFFERS', kind: 'binding', name: 'db' })]);
    expect(run.stderr).toMatch(/STORE_COPY_CONFLICT: 1 item\(s\) exist in the destination with different content; nothing was copied/);
    const after = await dest.rescan();
    expect(after.bindings.get('db')).toEqual(theirs);
    expect([...after.bindings.keys()]).toEqual(['db']); // api not copied either
    expect(after.revocations.pcr0).toEqual([]);
    dest.close();
  });

  it('a destination that already used the version for an unbound name is a conflict (VERSION_REUSED)', async () => {
    await fillFileStore();
    const dest = await ddbStore();
    const kms = new AwsKmsKeyProvider({});
    for (let i = 0; i < 2; i++) await bindSecret(dest, kms, { secret: 'api', value: enc(`x${i}`), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: KMS_KEY });
    kms.close();
    await unbindSecret(dest, 'api'); // DynamoDB reserved versions 1..2 of api; the file store's api is version 1
    const run = await copy();
    expect(run.status).toBe(1);
    expect(run.json.conflicts).toEqual([expect.objectContaining({ code: 'VERSION_REUSED', name: 'api' })]);
    expect((await dest.rescan()).bindings.size).toBe(0);
    dest.close();
  });

  it('a source file failing validation is refused with its name; nothing is copied', async () => {
    await fillFileStore();
    writeFileSync(join(w.from, 'bindings', 'broken.json'), '{"secret": "broken", "version": 1}');
    const run = await copy();
    expect(run.status).toBe(1);
    expect(run.json.error?.code).toBe('STORE_COPY_SOURCE_INVALID');
    expect(run.json.error?.message).toContain(join(w.from, 'bindings', 'broken.json'));
    expect((await ddbStore()).snapshot().bindings.size).toBe(0);
  });

  it('a damaged reserved-version record is refused with its name (versions must never repeat); nothing is copied', async () => {
    await fillFileStore();
    writeFileSync(join(w.from, 'bindings', '.retired', 'gone.json'), 'not json');
    const run = await copy();
    expect(run.status).toBe(1);
    expect(run.json.error?.code).toBe('STORE_COPY_SOURCE_INVALID');
    expect(run.json.error?.message).toContain(join(w.from, 'bindings', '.retired', 'gone.json'));
    expect((await ddbStore()).snapshot().bindings.size).toBe(0);
  });

  it('local-provider bindings are refused (LOCAL_PROVIDER_REFUSED) unless --allow-local, which copies them with a warning', async () => {
    const store = await FileStore.open(w.from);
    const local = await LocalKeyProvider.open(join(w.dir, 'file-state', 'local-provider.key'));
    await bindSecret(store, local, { secret: 'old', value: enc('local-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
    const refused = await copy();
    expect(refused.status).toBe(1);
    expect(refused.json.error?.code).toBe('LOCAL_PROVIDER_REFUSED');
    expect(refused.json.error?.message).toMatch(/old use the local key provider/);
    expect((await ddbStore()).snapshot().bindings.size).toBe(0);
    const allowed = await copy('--allow-local');
    expect(allowed.status).toBe(0);
    expect(allowed.json.copied.map((c) => c.name)).toEqual(['old']);
    expect(allowed.stderr).toMatch(/warning: binding\(s\) old use the local key provider/);
  });

  it('a broker on the DynamoDB store releases a copied aws-kms secret and honours the copied revocations', async () => {
    await fillFileStore();
    expect((await copy()).status).toBe(0);
    const config = resolveConfig(JSON.parse(readFileSync(w.config, 'utf8')) as object);
    mkdirSync(join(w.dir, 'broker'), { recursive: true });
    let broker: RunningBroker | undefined;
    try {
      broker = await startTestBroker(join(w.dir, 'broker'), [pki.root.pem], { store: config.store });
      const brokerJwk = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
      const enclave = new TestEnclave(pki, broker.url);
      const res = await enclave.request(['db']);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk))).toBe('db-v2');
      // The copied revocation of PCR0 0x66 holds on the DynamoDB store.
      const revoked = new TestEnclave(pki, broker.url);
      revoked.pcrs.set(0, Buffer.from(h(0x66), 'hex'));
      const denied = await revoked.request(['db']);
      expect([denied.status, denied.body.error?.code]).toEqual([403, 'REVOKED']);
    } finally {
      await broker?.close();
    }
  });
});

describe('the local key provider on a shared store', () => {
  it('keygate bind --provider local with a DynamoDB config is refused: LOCAL_PROVIDER_REFUSED, use aws-kms; nothing is written', async () => {
    writeFileSync(join(w.dir, 'value'), 'v');
    const run = await cli(['bind', 'db', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--value-file', join(w.dir, 'value'), '--provider', 'local', '--config', w.config]);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/^keygate bind: LOCAL_PROVIDER_REFUSED: "db": the local key provider is refused on a shared \(DynamoDB\) store: .*use --provider aws-kms/m);
    expect((await ddbStore()).snapshot().bindings.size).toBe(0);
    // aws-kms is accepted on the same config.
    const ok = await cli(['bind', 'db', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--value-file', join(w.dir, 'value'), '--provider', 'aws-kms', '--kms-key-id', KMS_KEY, '--config', w.config]);
    expect(ok.status, ok.stderr).toBe(0);
  });

  it('keygate rotate of a local binding on a DynamoDB store is refused; a broker denies it (SECRET_UNAVAILABLE, audited LocalProviderRefused) and is not ready', async () => {
    // A local binding reaches the shared store by copy --allow-local (or an older keygate).
    const store = await FileStore.open(w.from);
    const local = await LocalKeyProvider.open(join(w.dir, 'file-state', 'local-provider.key'));
    await bindSecret(store, local, { secret: 'old', value: enc('local-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
    expect((await copy('--allow-local')).status).toBe(0);
    writeFileSync(join(w.dir, 'value'), 'v2');
    const rotate = await cli(['rotate', 'old', '--value-file', join(w.dir, 'value'), '--config', w.config]);
    expect(rotate.status).toBe(2);
    expect(rotate.stderr).toMatch(/^keygate rotate: LOCAL_PROVIDER_REFUSED: /m);

    const config = resolveConfig(JSON.parse(readFileSync(w.config, 'utf8')) as object);
    expect((await openProviders(config)).get('local')!.constructor.name).toBe('RefusedLocalProvider');
    // Even the broker whose state holds the very key file that encrypted it denies it: every replica answers the same.
    let broker: RunningBroker | undefined;
    try {
      broker = await startTestBroker(w.dir, [pki.root.pem], { store: config.store, stateDir: join(w.dir, 'file-state') });
      const res = await new TestEnclave(pki, broker.url).request(['old']);
      expect([res.status, res.body.error?.code]).toEqual([500, 'SECRET_UNAVAILABLE']);
      expect(res.body.secrets).toBeUndefined();
      const audit = readFileSync(join(w.dir, 'file-state', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { code?: string; providerErrors?: unknown });
      expect(audit.filter((r) => r.code !== undefined).at(-1)).toMatchObject({ code: 'SECRET_UNAVAILABLE:LocalProviderRefused', secret: 'old' });
      const ready = await fetch(`${broker.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { reason: string }).reason).toMatch(/local key in use is unusable \(LocalProviderRefused\)/);
    } finally {
      await broker?.close();
    }
  });

  it('the file store (one broker, --dev included) keeps the local provider', async () => {
    const config = resolveConfig({ store: join(w.dir, 'store'), stateDir: join(w.dir, 'state') });
    expect((await openProviders(config)).get('local')).toBeInstanceOf(LocalKeyProvider);
  });
});

describe('BindingStore.close()', () => {
  it('admin commands and a broker close the DynamoDB store (its client is destroyed)', async () => {
    const closed = vi.spyOn(DynamoDbStore.prototype, 'close');
    try {
      writeFileSync(join(w.dir, 'value'), 'v');
      const bind = await cli(['bind', 'db', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--value-file', join(w.dir, 'value'), '--provider', 'aws-kms', '--kms-key-id', KMS_KEY, '--config', w.config]);
      expect(bind.status, bind.stderr).toBe(0);
      expect(closed).toHaveBeenCalledTimes(1);
      // A refused command closes it too.
      const refused = await cli(['rotate', 'nope', '--value-file', join(w.dir, 'value'), '--config', w.config]);
      expect(refused.status).toBe(2);
      expect(closed).toHaveBeenCalledTimes(2);
      expect((await cli(['list', '--json', '--config', w.config])).status).toBe(0);
      expect(closed).toHaveBeenCalledTimes(3);
      const config = resolveConfig(JSON.parse(readFileSync(w.config, 'utf8')) as object);
      const broker = await startTestBroker(join(w.dir, 'b'), [pki.root.pem], { store: config.store });
      await broker.close();
      expect(closed).toHaveBeenCalledTimes(4);
    } finally {
      closed.mockRestore();
    }
  });
});
