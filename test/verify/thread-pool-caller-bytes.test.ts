/**
 * The thread-pool verifier (createThreadPoolVerifier) under callers that change the nonce or PCR bytes in place
 * while a check is on the pool (the verdict is the one for the bytes as passed: found by the session's adversarial
 * review), and under interleavings meant to poison the certificate cache (real and rogue CAs with the same names).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createVerifier, isAttestationError, type VerifyOptions } from '../../index.js';
import { createThreadPoolVerifier } from '../../broker/verify/verify.js';
import { createTestPki, defaultSpecs, issue, issueLeaf, type Issued, type TestPki } from '../support/pki.js';
import { defaultPcrs, makeDocument } from '../support/document.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (err) {
    if (isAttestationError(err)) return err.code;
    throw err;
  }
}

function syncCode(fn: () => unknown): string {
  try {
    fn();
    return 'OK';
  } catch (err) {
    if (isAttestationError(err)) return err.code;
    throw err;
  }
}

let pki: TestPki;
beforeAll(async () => {
  pki = await createTestPki(AT);
});

describe('option bytes changed in place while a check is on the pool', () => {
  // verify.ts claims "Every option is read before the first signature check", but it keeps references to
  // the caller's expectedNonce and pcrs Uint8Arrays and compares them after the awaited checks.
  it('expectedNonce changed in place after the call: the verdict must be the one for the bytes as passed', async () => {
    const nonce = new Uint8Array(32).fill(9);
    const bytes = makeDocument(pki, { timestamp: AT - 1000, nonce: nonce.slice() });
    const options: VerifyOptions = { at: AT, roots: [pki.root.pem], expectedNonce: nonce };
    expect(syncCode(() => createVerifier()(bytes, { ...options, expectedNonce: nonce.slice() }))).toBe('OK');
    const pending = codeOf(createThreadPoolVerifier({ threads: 1 })(bytes, options));
    nonce.fill(0); // the caller reuses its buffer while the check is on the pool
    expect(await pending).toBe('OK'); // fails: NONCE_MISMATCH
  });

  it('a required PCR given as bytes, changed in place after the call: the verdict must not change', async () => {
    const pcrs = defaultPcrs();
    const want = pcrs.get(0)!.slice();
    const bytes = makeDocument(pki, { timestamp: AT - 1000, pcrs });
    const options: VerifyOptions = { at: AT, roots: [pki.root.pem], pcrs: { 0: want } };
    expect(syncCode(() => createVerifier()(bytes, { ...options, pcrs: { 0: want.slice() } }))).toBe('OK');
    const pending = codeOf(createThreadPoolVerifier({ threads: 1 })(bytes, options));
    want.fill(0xee);
    expect(await pending).toBe('OK'); // fails: PCR_MISMATCH
  });

  it('conversely, a wrong nonce fixed up in place after the call must still be refused', async () => {
    const bytes = makeDocument(pki, { timestamp: AT - 1000, nonce: new Uint8Array(32).fill(9) });
    const expected = new Uint8Array(32).fill(1);
    const pending = codeOf(createThreadPoolVerifier({ threads: 1 })(bytes, { at: AT, roots: [pki.root.pem], expectedNonce: expected }));
    expected.fill(9);
    expect(await pending).toBe('NONCE_MISMATCH'); // fails: OK
  });
});

describe('certificate cache under interleavings', () => {
  let rogueInstance: Issued; // same subject as the instance CA, another key, self-made (not signed by the zonal key)
  let reissuedInstance: Issued; // same subject, another key, honestly issued by the zonal CA
  let rogueLeaf: Issued; // issued by the rogue instance CA
  let otherLeaf: Issued;

  beforeAll(async () => {
    const specs = defaultSpecs(AT);
    const zonal = pki.intermediates[1]!;
    reissuedInstance = await issue(specs.instance, zonal);
    // A self-made CA whose issuer name is the zonal CA's, signed by its own key.
    const attacker = await issue({ ...specs.zonal });
    rogueInstance = await issue(specs.instance, { ...attacker, cert: zonal.cert });
    rogueLeaf = await issue(specs.leaf, rogueInstance);
    otherLeaf = await issueLeaf(pki);
  });

  it('answers each document with its own code whatever the interleaving and cache size', async () => {
    const bundle = (instance: Issued): Uint8Array[] => [pki.root.der, pki.intermediates[0]!.der, pki.intermediates[1]!.der, instance.der];
    const docs = [
      { bytes: makeDocument(pki, { timestamp: AT - 1000 }), code: 'OK' },
      { bytes: makeDocument(pki, { timestamp: AT - 1000 }, otherLeaf), code: 'OK' },
      // the genuine leaf under a same-name CA with another key (honestly issued): leaf signature fails
      { bytes: makeDocument(pki, { timestamp: AT - 1000, cabundle: bundle(reissuedInstance) }), code: 'CERT_CHAIN_INVALID' },
      // the genuine leaf under the rogue CA: the rogue CA's own check fails
      { bytes: makeDocument(pki, { timestamp: AT - 1000, cabundle: bundle(rogueInstance) }), code: 'CERT_CHAIN_INVALID' },
      // a rogue leaf presented under the genuine chain
      { bytes: makeDocument(pki, { timestamp: AT - 1000, certificate: rogueLeaf.der, signer: rogueLeaf.privateKey }), code: 'CERT_CHAIN_INVALID' },
      // a rogue leaf with its rogue chain
      { bytes: makeDocument(pki, { timestamp: AT - 1000, certificate: rogueLeaf.der, signer: rogueLeaf.privateKey, cabundle: bundle(rogueInstance) }), code: 'CERT_CHAIN_INVALID' },
      // the genuine leaf, signed by someone else
      { bytes: makeDocument(pki, { timestamp: AT - 1000, signer: rogueLeaf.privateKey }), code: 'BAD_SIGNATURE' },
      // a leaf honestly issued by the re-issued CA, with that chain: fine
    ];
    const sync = createVerifier();
    for (const d of docs) expect(syncCode(() => sync(d.bytes, { at: AT, roots: [pki.root.pem] }))).toBe(d.code);
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat({ max: docs.length - 1 }), { minLength: 4, maxLength: 24 }), fc.constantFrom(1, 2, 3, 5, 1024), fc.constantFrom(1, 2, 3), async (order, cacheSize, threads) => {
        const pool = createThreadPoolVerifier({ threads, cacheSize });
        const got = await Promise.all(order.map((i) => codeOf(pool(docs[i]!.bytes, { at: AT, roots: [pki.root.pem] }))));
        expect(got).toEqual(order.map((i) => docs[i]!.code));
        // and again, with a warm cache
        const again = await Promise.all(order.map((i) => codeOf(pool(docs[i]!.bytes, { at: AT, roots: [pki.root.pem] }))));
        expect(again).toEqual(order.map((i) => docs[i]!.code));
      }),
      { numRuns: 60 },
    );
  }, 120_000);
});
