/**
 * The file store reads only regular files, never through a symbolic link, up
 * to a size cap: a FIFO in place of a binding file would otherwise block the
 * broker's one shared refresh forever (every release and /readyz wait on it),
 * and a link to /dev/zero would be read until memory runs out. Anything else
 * is a StoreProblem of that entry and fails closed for what it governs, like
 * an invalid file.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet, unbindSecret } from '../../broker/admin.js';
import { FileStore } from '../../broker/store/file-store.js';
import { MAX_STORE_FILE_BYTES } from '../../broker/store/regular-file.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { parseBinding } from '../../broker/policy/schema.js';
import { auditCodesAndSecretsIn, readyz as probeReadyz, startTestBroker } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave } from '../support/enclave.js';
import { until } from '../support/poll.js';

let pki: TestPki;
let dir: string;
let broker: RunningBroker | undefined;
beforeAll(async () => {
  pki = await createTestPki(Date.now());
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-filetypes-'));
});
afterEach(async () => {
  await broker?.close();
  broker = undefined;
  rmSync(dir, { recursive: true, force: true });
});

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const storeDir = (): string => join(dir, 'store');
const bindingFile = (name: string): string => join(storeDir(), 'bindings', `${name}.json`);
const mkfifo = (path: string): void => void execFileSync('mkfifo', [path]);

async function seed(): Promise<void> {
  const store = await FileStore.open(storeDir());
  const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
  for (const secret of ['db', 'other']) await bindSecret(store, local, { secret, value: enc(`${secret}-value`), allow: [pcrSet(APPROVED)], provider: 'local' });
}

const auditCodes = (): Array<{ code: string; secret: string | null }> => auditCodesAndSecretsIn(dir);
/** Bounded: a refresh stuck on a FIFO would otherwise hang the probe. */
const readyz = (b: RunningBroker): Promise<{ status: number; reason?: string }> => probeReadyz(b, 20_000);

describe('file store: a binding entry that is not a regular file (broker)', () => {
  it('a NEW broker over a FIFO binding file: keeps serving other names, denies that name (POLICY_DENIED, audited STORE_INVALID), /readyz reports it', async () => {
    await seed();
    rmSync(bindingFile('db'));
    mkfifo(bindingFile('db'));
    broker = await startTestBroker(dir, [pki.root.pem]);
    const enclave = new TestEnclave(pki, broker.url);
    const denied = await enclave.request(['db']);
    expect([denied.status, denied.body.error?.code]).toEqual([403, 'POLICY_DENIED']);
    expect(auditCodes().at(-1)).toEqual({ code: 'STORE_INVALID', secret: 'db' });
    expect((await enclave.request(['other'])).status).toBe(200);
    const ready = await readyz(broker);
    expect(ready).toEqual({ status: 503, reason: 'store files fail validation: 1 binding file (named in the broker log and by keygate list)' });
    expect(broker.store.problems()).toEqual([{ file: bindingFile('db'), message: expect.stringMatching(/^not a regular file/) }]);
  }, 60_000);

  it('a RUNNING broker: a binding replaced by a FIFO is denied once seen, the others keep being released, and the FIFO can be unbound', async () => {
    await seed();
    broker = await startTestBroker(dir, [pki.root.pem]);
    const enclave = new TestEnclave(pki, broker.url);
    expect((await enclave.request(['db'])).status).toBe(200);
    rmSync(bindingFile('db'));
    mkfifo(bindingFile('db'));
    const running = broker;
    await until('the FIFO binding to be denied', async () => (await enclave.request(['db'])).body.error?.code === 'POLICY_DENIED');
    expect((await enclave.request(['other'])).status).toBe(200);
    expect((await readyz(running)).status).toBe(503);
    // Unbinding the name removes the FIFO (never reads it) and reserves a version above any it had.
    const admin = await FileStore.open(storeDir());
    await unbindSecret(admin, 'db');
    expect(existsSync(bindingFile('db'))).toBe(false);
    await until('/readyz to recover', async () => (await readyz(running)).status === 200);
  }, 90_000);
});

describe('file store: what it reads and writes', () => {
  it('a symbolic link in place of a binding file (even to a valid one) is a problem naming it; the name is denied', async () => {
    await seed();
    const real = join(dir, 'db-copy.json');
    writeFileSync(real, readFileSync(bindingFile('db')));
    rmSync(bindingFile('db'));
    symlinkSync(real, bindingFile('db'));
    symlinkSync('/dev/zero', bindingFile('zero'));
    const store = await FileStore.open(storeDir(), { fullScanIntervalMs: 0 });
    const snap = store.snapshot();
    expect([...snap.bindings.keys()]).toEqual(['other']);
    expect([...snap.invalidBindings].sort()).toEqual(['db', 'zero']);
    expect(store.problems().map((p) => [p.file, p.message.split(':')[0]]).sort()).toEqual([
      [bindingFile('db'), 'a symbolic link'],
      [bindingFile('zero'), 'a symbolic link'],
    ]);
  });

  it('a FIFO in place of revocations.json stops every release (revocationsProblem), without blocking the load', async () => {
    await seed();
    mkfifo(join(storeDir(), 'revocations.json'));
    const store = await FileStore.open(storeDir());
    expect(store.snapshot().revocationsProblem?.message).toMatch(/^not a regular file/);
  });

  it('a file larger than the cap is a problem naming its size; writing one is refused (STORE_TOO_LARGE) and writes nothing', async () => {
    await seed();
    const big = (secret: string): ReturnType<typeof parseBinding> =>
      parseBinding({ ...(JSON.parse(readFileSync(bindingFile('db'), 'utf8')) as object), secret, ciphertext: Buffer.alloc(MAX_STORE_FILE_BYTES, 1).toString('base64') });
    writeFileSync(bindingFile('huge'), JSON.stringify(big('huge')));
    const store = await FileStore.open(storeDir());
    expect(store.snapshot().invalidBindings).toEqual(new Set(['huge']));
    expect(store.problems()).toEqual([{ file: bindingFile('huge'), message: expect.stringMatching(/bytes: larger than a store file may be \(1048576 bytes\)$/) }]);
    const err = await store.update(async (_current, tx) => tx.putBinding(big('big2'))).then(() => undefined, (e: unknown) => e);
    expect((err as { code?: string }).code).toBe('STORE_TOO_LARGE');
    expect(existsSync(bindingFile('big2'))).toBe(false);
    expect(() => store.checkUpdate([{ kind: 'binding', binding: big('big3') }])).toThrow(/at most 1048576/);
  });

  it('a FIFO as a reserved-version record refuses a bind of that name (never blocks, versions never repeat)', async () => {
    await seed();
    mkdirSync(join(storeDir(), 'bindings', '.retired'), { recursive: true });
    mkfifo(join(storeDir(), 'bindings', '.retired', 'fresh.json'));
    const store = await FileStore.open(storeDir());
    const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
    await expect(bindSecret(store, local, { secret: 'fresh', value: enc('x'), allow: [pcrSet(APPROVED)], provider: 'local' })).rejects.toThrow(/retired-version record is not a regular file/);
    expect(existsSync(bindingFile('fresh'))).toBe(false);
  });
});
