import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDevPki } from '../../vsock-shim/simulator/pki-store.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { verifyAttestation } from '../../index.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-devpki-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('persisted development PKI', () => {
  it('is created once (mode 0600) and shared: documents from a reloaded copy verify under the first root', async () => {
    const [a, b] = await Promise.all([openDevPki(dir), openDevPki(dir)]);
    expect(a.root.pem).toBe(b.root.pem);
    expect(statSync(join(dir, 'dev-pki.json')).mode & 0o777).toBe(0o600);
    const reloaded = await openDevPki(dir);
    expect(reloaded.root.pem).toBe(a.root.pem);
    expect(reloaded.leaf.der).not.toEqual(a.leaf.der); // each process its own leaf
    const sim = await NsmSimulator.create({ pki: reloaded, warn: () => {} });
    const doc = verifyAttestation(await sim.client().attest({}), { at: Date.now(), roots: [a.root.pem] });
    expect(doc.cabundle[0]).toEqual(a.root.der);
  });

  it('starts over when its CAs are about to expire', async () => {
    const first = await openDevPki(dir);
    const later = await openDevPki(dir, Date.now() + 365 * 86_400_000);
    expect(later.root.pem).not.toBe(first.root.pem);
  });
});
