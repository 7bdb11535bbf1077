/**
 * Roots are read afresh with every document (the per-root caches are keyed by a PEM text, immutable, or a DER root's
 * digest): the same array changed in place, a list with another root, or DER roots changed in place never leave a
 * verifier trusting a root the list given with this document does not name. (A whole-list memo tried for issue 15
 * saved ~0.7 µs per document and was dropped.)
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createThreadPoolVerifier, createVerifier } from '../../broker/verify/verify.js';
import { isAttestationError } from '../../broker/verify/errors.js';
import { makeDocument } from '../support/document.js';
import { createTestPki, type TestPki } from '../support/pki.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
let a: TestPki;
let b: TestPki;

beforeAll(async () => {
  a = await createTestPki(AT);
  b = await createTestPki(AT);
}, 60_000);

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
    return 'NO_ERROR';
  } catch (err) {
    if (isAttestationError(err)) return err.code;
    throw err;
  }
}

describe('roots are those given with each document', () => {
  for (const kind of ['sync', 'pool'] as const) {
    it(`${kind}: the same array changed in place, another list, and DER roots are read afresh`, async () => {
      const verify = kind === 'sync' ? createVerifier() : createThreadPoolVerifier({ threads: 1 });
      const docA = makeDocument(a, { timestamp: AT - 1000 });
      const docB = makeDocument(b, { timestamp: AT - 1000 });
      const roots = [a.root.pem];
      expect(await codeOf(() => verify(docA, { at: AT, roots }))).toBe('NO_ERROR');
      expect(await codeOf(() => verify(docA, { at: AT, roots }))).toBe('NO_ERROR');
      roots[0] = b.root.pem; // the same array, another root
      expect(await codeOf(() => verify(docA, { at: AT, roots }))).toBe('UNTRUSTED_ROOT');
      expect(await codeOf(() => verify(docB, { at: AT, roots }))).toBe('NO_ERROR');
      roots.push(a.root.pem); // longer
      expect(await codeOf(() => verify(docA, { at: AT, roots }))).toBe('NO_ERROR');
      expect(await codeOf(() => verify(docA, { at: AT, roots: [b.root.pem] }))).toBe('UNTRUSTED_ROOT');
      // DER roots: bytes the caller may change, so never remembered.
      const der = new Uint8Array(a.root.der);
      const derRoots = [der];
      expect(await codeOf(() => verify(docA, { at: AT, roots: derRoots }))).toBe('NO_ERROR');
      der.set(b.root.der.subarray(0, der.length));
      expect(await codeOf(() => verify(docA, { at: AT, roots: [new Uint8Array(b.root.der)] }))).toBe('UNTRUSTED_ROOT');
      expect(await codeOf(() => verify(docA, { at: AT, roots: [a.root.pem] }))).toBe('NO_ERROR');
      await expect(Promise.resolve().then(() => verify(docA, { at: AT, roots: [] }))).rejects.toThrow(TypeError);
    });
  }
});
