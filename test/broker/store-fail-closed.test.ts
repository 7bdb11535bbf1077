/**
 * A store the broker cannot fully load fails closed, in a fresh process and
 * in a running one: a broken revocations.json stops every release, a broken
 * binding file denies that name only, and /readyz and `keygate list` name the
 * file and field.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet, revokeIdentities } from '../../broker/admin.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { auditCodesAndSecretsIn, readyz, startTestBroker } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, buildPcrs, h } from '../support/enclave.js';
import { keygate } from '../support/cli.js';

let pki: TestPki;
let dir: string;
let broker: RunningBroker | undefined;
beforeAll(async () => {
  pki = await createTestPki(Date.now());
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-failclosed-'));
});
afterEach(async () => {
  await broker?.close();
  broker = undefined;
  rmSync(dir, { recursive: true, force: true });
});

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const revocationsFile = (): string => join(dir, 'store', 'revocations.json');
/** Valid JSON, invalid content: the field is named in the error. */
const BROKEN_REVOCATIONS = JSON.stringify({ pcr0: ['not-a-pcr'], instances: [], baselines: [] });

/** Binds `db` and `other` for the approved identity and `canary` for PCR0 0x44, then revokes PCR0 0x44. */
async function seed(): Promise<void> {
  const store = await FileStore.open(join(dir, 'store'));
  const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
  for (const secret of ['db', 'other']) await bindSecret(store, local, { secret, value: enc(`${secret}-value`), allow: [pcrSet(APPROVED)], provider: 'local' });
  await bindSecret(store, local, { secret: 'canary', value: enc('c'), allow: [pcrSet({ ...APPROVED, 0: h(0x44) })], provider: 'local' });
  await revokeIdentities(store, { pcr0: [h(0x44)] });
}

const auditCodes = (): Array<{ code: string; secret: string | null }> => auditCodesAndSecretsIn(dir);

describe('a store that cannot be fully loaded fails closed', () => {
  it('a NEW broker over a corrupt revocations.json releases nothing to anyone (STORE_UNAVAILABLE) and is not ready', async () => {
    await seed();
    writeFileSync(revocationsFile(), BROKEN_REVOCATIONS);
    broker = await startTestBroker(dir, [pki.root.pem]);

    const revoked = await new TestEnclave(pki, broker.url, buildPcrs(0x44)).request(['canary']);
    expect([revoked.status, revoked.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']);
    const innocent = await new TestEnclave(pki, broker.url).request(['db']);
    expect([innocent.status, innocent.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']);
    // The refusal does not depend on the names asked for: one record per request, like other such refusals.
    expect(auditCodes().slice(-2)).toEqual([
      { code: 'STORE_UNAVAILABLE:revocations.json', secret: null },
      { code: 'STORE_UNAVAILABLE:revocations.json', secret: null },
    ]);
    const ready = await readyz(broker);
    expect(ready.status).toBe(503);
    expect(ready.reason).toMatch(/revocations\.json \(revocations\.json\.pcr0\[0\]/);

    // `keygate list` names the file and field, exits 1, and still lists what loads.
    const list = keygate(['list', '--store', join(dir, 'store'), '--state', join(dir, 'state')]);
    expect(list.status).toBe(1);
    expect(list.stderr).toMatch(/revocations\.json: revocations\.json\.pcr0\[0\]/);
    expect(list.stdout).toMatch(/^db {2}v1/m);
    expect(list.stdout).toMatch(/revoked identities: UNKNOWN/);
    // Revoking more would write a list without the broken one's entries: refused.
    const revoke = keygate(['revoke', '--pcr0', h(0x55), '--store', join(dir, 'store'), '--state', join(dir, 'state')]);
    expect(revoke.status).toBe(2);
    expect(revoke.stderr).toMatch(/revocations\.json fails validation/);
    expect(readFileSync(revocationsFile(), 'utf8')).toBe(BROKEN_REVOCATIONS);
  });

  it('while revocations.json is broken, an enclave asking for 32 names costs at most one audit record per request', async () => {
    await seed();
    writeFileSync(revocationsFile(), BROKEN_REVOCATIONS);
    broker = await startTestBroker(dir, [pki.root.pem]);
    const before = auditCodes().length;
    const names = Array.from({ length: 32 }, (_, i) => `junk-${i}`);
    const stranger = new TestEnclave(pki, broker.url, buildPcrs(0x99));
    for (let i = 0; i < 30; i++) expect((await stranger.request(names)).body.error?.code).toBe('STORE_UNAVAILABLE');
    // Before: 32 fsynced records per request (960). Now at most one each, sampled per client.
    expect(auditCodes().length - before).toBeLessThanOrEqual(30);
  });

  it('a RUNNING broker stops releasing as soon as revocations.json goes bad, and recovers when it is fixed', async () => {
    await seed();
    broker = await startTestBroker(dir, [pki.root.pem]);
    const enclave = new TestEnclave(pki, broker.url);
    expect((await enclave.request(['db'])).status).toBe(200);
    const good = readFileSync(revocationsFile(), 'utf8');

    writeFileSync(revocationsFile(), BROKEN_REVOCATIONS);
    await broker.store.rescan(); // what the periodic full scan does for an in-place edit
    const res = await enclave.request(['db']);
    expect([res.status, res.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']); // the last good copy is not trusted
    const canary = await new TestEnclave(pki, broker.url, buildPcrs(0x44)).request(['canary']);
    expect(canary.body.error?.code).toBe('STORE_UNAVAILABLE');
    expect((await readyz(broker)).status).toBe(503);

    writeFileSync(revocationsFile(), good);
    await broker.store.rescan();
    expect((await enclave.request(['db'])).status).toBe(200);
    expect((await new TestEnclave(pki, broker.url, buildPcrs(0x44)).request(['canary'])).body.error?.code).toBe('REVOKED');
    expect((await readyz(broker)).status).toBe(200);
  });

  it('a corrupt binding file denies only that name, in a new broker (POLICY_DENIED to the caller, STORE_INVALID in the audit)', async () => {
    await seed();
    const file = join(dir, 'store', 'bindings', 'db.json');
    writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, 'utf8')), ttlSeconds: -5 }));
    broker = await startTestBroker(dir, [pki.root.pem]);
    const enclave = new TestEnclave(pki, broker.url);
    const denied = await enclave.request(['db']);
    expect([denied.status, denied.body.error?.code]).toEqual([403, 'POLICY_DENIED']);
    expect(auditCodes().at(-1)).toEqual({ code: 'STORE_INVALID', secret: 'db' });
    expect((await enclave.request(['other'])).status).toBe(200);
    const ready = await readyz(broker);
    expect(ready.status).toBe(503);
    // The unauthenticated listener does not name secrets: a count here, the file and field in the log and `keygate list`.
    expect(ready.reason).toBe('store files fail validation: 1 binding file (named in the broker log and by keygate list)');
    const list = keygate(['list', '--json', '--store', join(dir, 'store'), '--state', join(dir, 'state')]);
    expect(list.status).toBe(1);
    const parsed = JSON.parse(list.stdout) as { bindings: Array<{ secret: string }>; invalidBindings: string[]; problems: string[] };
    expect(parsed.bindings.map((b) => b.secret)).toEqual(['canary', 'other']);
    expect(parsed.invalidBindings).toEqual(['db']);
    expect(parsed.problems).toEqual([expect.stringMatching(/bindings\/db\.json: db\.json\.ttlSeconds/)]);
    // Re-binding over the broken file from a blank slate (version 1) is refused; unbinding it is the way out.
    const store = await FileStore.open(join(dir, 'store'));
    const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
    await expect(bindSecret(store, local, { secret: 'db', value: enc('x'), allow: [pcrSet(APPROVED)], provider: 'local' })).rejects.toThrow(/binding file of "db" fails validation/);
  });
});
