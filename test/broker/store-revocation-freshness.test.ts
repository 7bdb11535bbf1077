/**
 * The file store's per-release freshness check against revocation: a `keygate revoke` (a real subprocess)
 * that has returned stops every release that starts after it, even while a check or load of the store that
 * began before it is still in flight. Callers share a check only if it begins after they called (those in
 * one turn of the event loop); a caller arriving while one is under way waits for the next, which every
 * such caller shares. node:fs/promises' lstat is wrapped so that the answer of one lstat of revocations.json, read
 * before the revoke, is held until the test lets it go: "a check in flight that began before the
 * revocation" is made deterministic instead of hoped for.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileStore } from '../../broker/store/file-store.js';
import { startTestBrokerWithDb } from '../support/broker.js';
import { createTestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, h } from '../support/enclave.js';
import { keygate } from '../support/cli.js';

const gate = vi.hoisted(() => ({ path: '', hold: undefined as ((release: () => void) => void) | undefined }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs/promises')>();
  const lstat = (async (...args: Parameters<typeof real.lstat>) => {
    const info = await real.lstat(...args);
    const hold = gate.hold;
    if (hold && String(args[0]) === gate.path) {
      gate.hold = undefined;
      await new Promise<void>((release) => hold(release));
    }
    return info;
  }) as typeof real.lstat;
  return { ...real, lstat };
});

/** Holds the answer of the next lstat of `path` (already read) until the returned function is called. */
function holdNextLstat(path: string): Promise<() => void> {
  gate.path = path;
  return new Promise((resolve) => (gate.hold = resolve));
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-fresh-'));
});
afterEach(() => {
  gate.hold = undefined;
  rmSync(dir, { recursive: true, force: true });
});

const storeDir = (): string => join(dir, 'store');
const revocationsFile = (): string => join(storeDir(), 'revocations.json');

/** `keygate revoke --pcr0 pcr0` in its own process; returns once the command has. */
function revokePcr0(pcr0: string): void {
  const r = keygate(['revoke', '--pcr0', pcr0, '--store', storeDir(), '--state', join(dir, 'state')]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
}

/** Until `held` (a held lstat) or `inFlight` settles, whichever first: the store may not need the lstat at all (then nothing stays armed). */
async function heldOrDone(held: Promise<() => void>, inFlight: Promise<unknown>): Promise<() => void> {
  const release = await Promise.race([held, inFlight.then(() => undefined, () => undefined)]);
  gate.hold = undefined;
  return release ?? ((): void => {});
}

const TARGET = h(0x71);

describe('file store: a revocation is seen by every refresh called after it returned', () => {
  it('a check that began before the revoke is not reused by a refresh called after it', { timeout: 120_000 }, async () => {
    revokePcr0(h(0x70)); // revocations.json exists (the held lstat needs a file)
    const store = await FileStore.open(storeDir());
    const held = holdNextLstat(revocationsFile());
    const before = store.refresh(); // nothing changed: any check it makes reads the pre-revoke state
    const release = await heldOrDone(held, before);
    revokePcr0(TARGET);
    const after = store.refresh();
    release();
    await before;
    expect((await after).revocations.pcr0).toContain(TARGET);
  });

  it('a load in flight that began before the revoke is not shared by later callers: they share one new check after it', { timeout: 120_000 }, async () => {
    revokePcr0(h(0x70));
    const store = await FileStore.open(storeDir());
    revokePcr0(h(0x72)); // a change, so the next refresh loads
    const held = holdNextLstat(revocationsFile());
    const loading = store.refresh();
    const release = await held; // a check is under way, its revocations.json read before the revoke
    revokePcr0(TARGET);
    const afterA = store.refresh();
    const afterB = store.refresh();
    release();
    const [first, second] = await Promise.all([loading, afterA, afterB]);
    expect(afterB).toBe(afterA);
    expect(first!.revocations.pcr0).toContain(h(0x72));
    expect(second!.revocations.pcr0).toEqual(expect.arrayContaining([h(0x72), TARGET]));
  });

  it('callers in the same turn of the event loop share one check', async () => {
    const store = await FileStore.open(storeDir());
    const together = [store.refresh(), store.refresh(), store.refresh()];
    expect(new Set(together).size).toBe(1);
    await Promise.all(together);
  });
});

describe('broker on the file store: a release that starts after keygate revoke returned is refused', () => {
  it.each([
    ['nothing else changed', false],
    ['another change loading meanwhile', true],
  ])('while the check of a release that began before the revoke is held (%s): REVOKED', { timeout: 180_000 }, async (_name, changeFirst) => {
    const pki = await createTestPki(Date.now());
    const broker = await startTestBrokerWithDb(dir, [pki.root.pem]);
    let release = (): void => {};
    try {
      revokePcr0(h(0x70));
      const enclave = new TestEnclave(pki, broker.url);
      expect((await enclave.request(['db'])).status).toBe(200); // the broker has loaded revocations.json
      if (changeFirst) revokePcr0(h(0x72));
      const refreshes = vi.spyOn(broker.store, 'refresh');
      const held = holdNextLstat(revocationsFile());
      const first = enclave.request(['db']); // began before the revoke: may be released
      release = changeFirst ? await held : await heldOrDone(held, first);
      revokePcr0(APPROVED[0]);
      const asked = refreshes.mock.calls.length;
      const second = enclave.request(['db']);
      // The held check goes on only once the second request has asked the store.
      await vi.waitFor(() => expect(refreshes.mock.calls.length).toBeGreaterThan(asked), { timeout: 60_000, interval: 5 });
      release();
      await first;
      const refused = await second;
      expect([refused.status, refused.body.error?.code]).toEqual([403, 'REVOKED']);
    } finally {
      release();
      await broker.close();
    }
  });
});
