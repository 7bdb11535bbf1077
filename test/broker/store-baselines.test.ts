/**
 * Baselines and un-revocation as store operations, on both backends (the file store and DynamoDB on
 * moto_server): each is one atomic update, concurrent admins lose nothing, a refusal writes nothing.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../broker/store/file-store.js';
import { DynamoDbStore, initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import type { BindingStore } from '../../broker/store/store.js';
import { countApprovals, parseBaseline, type Baseline } from '../../broker/policy/baseline.js';
import { decide } from '../../broker/policy/decide.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { bindSecret, pcrSet, revokeIdentities, revokeSecret, rotateSecret } from '../../broker/admin.js';
import { addAllowRule, approveStoredBaseline, putStoredBaseline } from '../../broker/ops/stored-baselines.js';
import { unrevokeIdentities, unrevokeSecret } from '../../broker/ops/unrevoke.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';
import { h } from '../support/enclave.js';

let moto: Moto;
let savedEnv: NodeJS.ProcessEnv;
beforeAll(async () => {
  moto = await startMoto();
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
}, 60_000);
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
});

let dir: string;
const opened: BindingStore[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-store-baselines-'));
});
afterEach(() => {
  for (const s of opened.splice(0)) s.close();
  rmSync(dir, { recursive: true, force: true });
});

type Open = () => Promise<BindingStore>;
const backends: Array<[string, () => Promise<Open>]> = [
  ['file', async () => async () => FileStore.open(join(dir, 'store'), { fullScanIntervalMs: 0 })],
  [
    'dynamodb',
    async () => {
      const settings = { kind: 'dynamodb' as const, table: uniqueName('keygate-bl'), consistency: { maxStalenessMs: 0 } };
      await initDynamoDbStoreTable(settings);
      return async () => {
        const s = await DynamoDbStore.open(settings);
        opened.push(s);
        return s;
      };
    },
  ],
];

const recorded = (name: string, pcr0 = 0x11, pcr8?: number): Baseline =>
  parseBaseline({ formatVersion: 1, name, pcrs: { 0: h(pcr0), 1: h(0x22), 2: h(0x33), ...(pcr8 ? { 8: h(pcr8) } : {}) }, builder: 'ci', createdAt: '2026-01-01T00:00:00Z', source: 'eif', approvals: [] });
const admin = (): KeyObject => generateKeyPairSync('ed25519').privateKey;
/** Valid approvals by these admins (the broker counts against public keys). */
const approvalsBy = (b: Baseline, keys: readonly KeyObject[]): Promise<number> => countApprovals(b, keys.map((k) => createPublicKey(k)));
const value = (s: string): Uint8Array => new TextEncoder().encode(s);
const now = new Date('2026-02-01T00:00:00Z');

describe.each(backends)('%s store', (_kind, backend) => {
  let open: Open;
  beforeEach(async () => {
    open = await backend();
  });

  it('baseline put stores a baseline; the same build again merges approvals; another build under the name is refused and nothing is written', async () => {
    const store = await open();
    const [alice, bob] = [admin(), admin()];
    expect((await putStoredBaseline(store, recorded('b1', 0x11, 0x88))).changed).toBe(true);
    expect((await putStoredBaseline(store, recorded('b1', 0x11, 0x88))).changed).toBe(false);
    await approveStoredBaseline(store, 'b1', alice, now);
    // A copy carrying bob's approval (approved from the file, offline) adds it, keeps alice's.
    const fromFile = await approveStoredBaseline(await open(), 'b1', bob, now, recorded('b1', 0x11, 0x88));
    expect(fromFile.baseline.approvals).toHaveLength(2);
    await putStoredBaseline(store, recorded('b1', 0x11, 0x88));
    const stored = (await store.refresh()).baselines.get('b1')!;
    expect(await approvalsBy(stored, [alice, bob])).toBe(2);
    expect(stored.pcrs['8']).toBe(h(0x88));

    await expect(putStoredBaseline(store, recorded('b1', 0x99))).rejects.toMatchObject({ code: 'BASELINE_CONFLICT' });
    await expect(approveStoredBaseline(store, 'b1', alice, now, recorded('b1', 0x99))).rejects.toMatchObject({ code: 'BASELINE_CONFLICT' });
    expect((await (await open()).refresh()).baselines.get('b1')).toEqual(stored);
    await expect(approveStoredBaseline(store, 'none', alice, now)).rejects.toMatchObject({ code: 'BASELINE_NOT_FOUND' });
    // --replace: the other build, with only its own approvals.
    await putStoredBaseline(store, recorded('b1', 0x99), { replace: true });
    expect((await store.refresh()).baselines.get('b1')!.pcrs['0']).toBe(h(0x99));
  });

  it('admins approving at once from separate handles: every approval lands (4 keys, 4 handles)', async () => {
    await putStoredBaseline(await open(), recorded('b2'));
    const keys = [admin(), admin(), admin(), admin()];
    const handles = await Promise.all(keys.map(() => open()));
    await Promise.all(handles.map((s, i) => approveStoredBaseline(s, 'b2', keys[i]!, now)));
    const stored = (await (await open()).refresh()).baselines.get('b2')!;
    expect(await approvalsBy(stored, keys)).toBe(4);
  });

  it('re-binding with a baseline file keeps the approvals the store holds (merge, not overwrite)', async () => {
    const store = await open();
    const local = await LocalKeyProvider.open(join(dir, 'local.key'));
    const alice = admin();
    await putStoredBaseline(store, recorded('b3'));
    await approveStoredBaseline(store, 'b3', alice, now);
    const file = recorded('b3'); // the recorded file: no approvals
    await bindSecret(store, local, { secret: 'db', value: value('v'), allow: [pcrSet(file.pcrs, 'b3')], provider: 'local', baselines: [file] });
    expect(await approvalsBy((await store.refresh()).baselines.get('b3')!, [alice])).toBe(1);
    await expect(bindSecret(store, local, { secret: 'db', value: value('v'), allow: [pcrSet(recorded('b3', 0x77).pcrs, 'b3')], provider: 'local', baselines: [recorded('b3', 0x77)] })).rejects.toMatchObject({
      code: 'BASELINE_CONFLICT',
    });
  });

  it('a rule added without the value keeps the value, ciphertext and version; a rotation racing it is refused', async () => {
    const store = await open();
    const local = await LocalKeyProvider.open(join(dir, 'local.key'));
    const bound = await bindSecret(store, local, { secret: 'api', value: value('v1'), allow: [pcrSet(recorded('x').pcrs)], provider: 'local' });
    await putStoredBaseline(store, recorded('b4', 0x44));
    const b4 = (await store.refresh()).baselines.get('b4')!;
    const { binding, added } = await addAllowRule(await open(), 'api', pcrSet({ ...b4.pcrs, 3: h(0x03) }, 'b4'), b4, now);
    expect(added).toBe(true);
    expect([binding.version, binding.ciphertext, binding.allow.length, binding.updatedAt]).toEqual([bound.version, bound.ciphertext, 2, now.toISOString()]);
    expect((await addAllowRule(store, 'api', pcrSet({ ...b4.pcrs, 3: h(0x03) }, 'b4'), b4, now)).added).toBe(false);
    await expect(addAllowRule(store, 'nope', pcrSet(b4.pcrs, 'b4'), b4, now)).rejects.toMatchObject({ code: 'NOT_BOUND' });
    // A later rotation lands above the version the added rule kept.
    const providers = new Map([['local' as const, local]]);
    expect((await rotateSecret(store, providers, 'api', value('v2'))).version).toBe(bound.version + 1);
  });

  it('unrevoke undoes each revoke form in one update; naming something not revoked changes nothing', async () => {
    const store = await open();
    const local = await LocalKeyProvider.open(join(dir, 'local.key'));
    const bound = await bindSecret(store, local, { secret: 'db', value: value('v'), allow: [pcrSet(recorded('x').pcrs)], provider: 'local' });
    await revokeSecret(store, 'db');
    const back = await unrevokeSecret(await open(), 'db');
    expect([back.revoked, back.version, back.ciphertext]).toEqual([false, bound.version, bound.ciphertext]);
    await expect(unrevokeSecret(store, 'db')).rejects.toMatchObject({ code: 'NOT_REVOKED' });
    await expect(unrevokeSecret(store, 'nope')).rejects.toMatchObject({ code: 'NOT_BOUND' });

    await revokeIdentities(store, { pcr0: [h(0xaa), h(0xbb)], instances: ['i-0123456789abcdef0'], baselines: ['b1', 'b2'] });
    const before = (await store.refresh()).revocations;
    await expect(unrevokeIdentities(store, { baselines: ['b1', 'b9'] })).rejects.toMatchObject({ code: 'NOT_REVOKED' });
    expect((await (await open()).refresh()).revocations).toEqual(before);
    const after = await unrevokeIdentities(await open(), { pcr0: [h(0xaa).toUpperCase()], instances: ['I-0123456789ABCDEF0'], baselines: ['b1'] });
    expect(after).toEqual({ pcr0: [h(0xbb)], instances: [], baselines: ['b2'] });
    expect((await store.refresh()).revocations).toEqual(after);
  });
});

describe('policy: a rule naming a baseline', () => {
  const identity = (pcrs: Record<number, string>): Parameters<typeof decide>[1] => ({ moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', pcrs, debug: false });
  const image = { 0: h(0x11), 1: h(0x22), 2: h(0x33), 8: h(0x88) };
  const binding = (rulePcrs: Record<number, string>): Parameters<typeof decide>[0] => ({
    secret: 's', version: 1, provider: 'local', ciphertext: 'AAAA', text: true, allow: [pcrSet(rulePcrs, 'b')], allowDebug: false, ttlSeconds: 60, revoked: false, createdAt: now.toISOString(), updatedAt: now.toISOString(),
  });
  const approved = new Map([['b', image]]);
  const revocations = { pcr0: [], instances: [], baselines: [] };

  it('may add PCR3 (IAM role) and PCR4 to the build: both are then required', () => {
    const rule = { ...image, 3: h(0x03), 4: h(0x04) };
    expect(decide(binding(rule), identity({ ...image, 3: h(0x03), 4: h(0x04) }), revocations, approved)).toEqual({ allow: true, rule: 0 });
    expect(decide(binding(rule), identity({ ...image, 3: h(0x0f), 4: h(0x04) }), revocations, approved)).toMatchObject({ allow: false, reason: 'PCR_MISMATCH' });
  });

  it('must agree with the baseline on every image PCR, PCR8 (signing certificate) included', () => {
    const { 8: _signer, ...unsigned } = image;
    expect(decide(binding(unsigned), identity(image), revocations, approved)).toMatchObject({ allow: false, reason: 'BASELINE_NOT_APPROVED' });
    expect(decide(binding({ ...image, 8: h(0x89) }), identity({ ...image, 8: h(0x89) }), revocations, approved)).toMatchObject({ allow: false, reason: 'BASELINE_NOT_APPROVED' });
    expect(decide(binding(image), identity({ ...image, 8: h(0x89) }), revocations, approved)).toMatchObject({ allow: false, reason: 'PCR_MISMATCH' });
  });
});
