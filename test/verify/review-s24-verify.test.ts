/** Review s24: key import in intermediates, cache slot interplay, roots memo TOCTOU. */
import { beforeAll, describe, expect, it } from 'vitest';
import { sign } from 'node:crypto';
import { children, readTlv } from '../../broker/verify/der.js';
import { createThreadPoolVerifier, createVerifier } from '../../broker/verify/verify.js';
import { isAttestationError } from '../../broker/verify/errors.js';
import { cacheKey } from '../../broker/verify/chain.js';
import { makeDocument } from '../support/document.js';
import { createTestPki, type Issued, type TestPki } from '../support/pki.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
const SPKI_PREFIX = Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex');
const P = BigInt('0x' + 'ff'.repeat(31) + 'fe' + 'ff'.repeat(4) + '00'.repeat(8) + 'ff'.repeat(4));
const be48 = (n: bigint): Buffer => Buffer.from(n.toString(16).padStart(96, '0'), 'hex');
const lengthBytes = (n: number): number[] => (n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff]);
const tlv = (tag: number, c: Uint8Array): Buffer => Buffer.concat([Buffer.of(tag, ...lengthBytes(c.length)), c]);
function withSpki(cert: Issued, issuer: Issued, spki: Uint8Array): Uint8Array {
  const [tbs, alg] = children(readTlv(cert.der, 0));
  const parts = children(tbs!).map((f, i) => (i === 6 ? Buffer.from(spki) : Buffer.from(f.raw)));
  const newTbs = tlv(0x30, Buffer.concat(parts));
  const sig = sign('sha384', newTbs, { key: issuer.privateKey, dsaEncoding: 'der' });
  return new Uint8Array(tlv(0x30, Buffer.concat([newTbs, Buffer.from(alg!.raw), tlv(0x03, Buffer.concat([Buffer.of(0), sig]))])));
}
async function codeOf(f: () => unknown): Promise<string> {
  try { await f(); return 'NO_ERROR'; } catch (err) { if (isAttestationError(err)) return err.code; return `THROWN:${(err as Error)?.name}`; }
}
async function msgOf(f: () => unknown): Promise<string> {
  try { await f(); return 'NO_ERROR'; } catch (err) { return isAttestationError(err) ? `${err.code} ${err.message}` : `THROWN:${String(err)}`; }
}
let pki: TestPki; let twin: TestPki;
beforeAll(async () => { pki = await createTestPki(AT); twin = await createTestPki(AT); }, 60_000);

describe('review: bad keys in intermediates', () => {
  it('an intermediate (re-signed by its genuine issuer) with an off-curve / >=p / zero key: same code on both verifiers, no unhandled rejection, even 64 at once', async () => {
    const unhandled: unknown[] = [];
    const onU = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onU);
    try {
      const own = Buffer.from(pki.intermediates[1]!.cert.publicKey.rawData);
      const pt = own.subarray(SPKI_PREFIX.length + 1);
      const x = BigInt('0x' + pt.subarray(0, 48).toString('hex')); const y = BigInt('0x' + pt.subarray(48).toString('hex'));
      const bad = [
        Buffer.concat([SPKI_PREFIX, Buffer.of(4), be48(x), be48((y + 1n) % P)]),
        Buffer.concat([SPKI_PREFIX, Buffer.of(4), be48(x + P < 1n << 384n ? x + P : P), be48(y)]),
        Buffer.concat([SPKI_PREFIX, Buffer.of(4), Buffer.alloc(96)]),
      ];
      const sync = createVerifier(); const pool = createThreadPoolVerifier({ threads: 2 });
      for (const spki of bad) {
        const zonal = withSpki(pki.intermediates[1]!, pki.intermediates[0]!, spki);
        const doc = makeDocument(pki, { timestamp: AT - 1000, cabundle: [pki.root.der, pki.intermediates[0]!.der, zonal, pki.intermediates[2]!.der] } as never);
        const opts = { at: AT, roots: [pki.root.pem] };
        const want = 'CERT_CHAIN_INVALID cabundle[2]: unreadable public key';
        expect(await msgOf(() => sync(doc, opts))).toContain(want);
        const many = await Promise.all(Array.from({ length: 64 }, () => msgOf(() => pool(doc, opts))));
        for (const m of many) expect(m).toContain(want);
      }
      // and the genuine document still verifies on both afterwards
      const good = makeDocument(pki, { timestamp: AT - 1000 });
      expect(await codeOf(() => sync(good, { at: AT, roots: [pki.root.pem] }))).toBe('NO_ERROR');
      expect(await codeOf(() => pool(good, { at: AT, roots: [pki.root.pem] }))).toBe('NO_ERROR');
      await new Promise((r) => setTimeout(r, 50));
      expect(unhandled).toEqual([]);
    } finally { process.off('unhandledRejection', onU); }
  });
});

describe('review: cache slot', () => {
  it('eviction with cacheSize 1, interleaved twin PKIs (same names), caller buffers mutated after caching', async () => {
    for (const verify of [createVerifier({ cacheSize: 1 }), createThreadPoolVerifier({ threads: 1, cacheSize: 1 })]) {
      const docA = makeDocument(pki, { timestamp: AT - 1000 });
      const docT = makeDocument(twin, { timestamp: AT - 1000 });
      const roots = [pki.root.pem, twin.root.pem];
      for (let i = 0; i < 3; i++) {
        expect(await codeOf(() => verify(docA, { at: AT, roots }))).toBe('NO_ERROR');
        expect(await codeOf(() => verify(docT, { at: AT, roots }))).toBe('NO_ERROR');
        // pki's leaf under twin's chain, twin's leaf under pki's chain
        expect(await codeOf(() => verify(makeDocument(twin, { timestamp: AT - 1000 }, pki.leaf), { at: AT, roots }))).toBe('BAD_SIGNATURE'.length ? 'CERT_CHAIN_INVALID' : '');
        expect(await codeOf(() => verify(makeDocument(pki, { timestamp: AT - 1000 }, twin.leaf), { at: AT, roots }))).toBe('CERT_CHAIN_INVALID');
      }
      // mutate the caller's document after it was cached: leaf bytes changed in place (not the tail) -> must be re-verified and refused
      const docM = makeDocument(pki, { timestamp: AT - 1000 });
      expect(await codeOf(() => verify(docM, { at: AT, roots }))).toBe('NO_ERROR');
      const leafAt = Buffer.from(docM).indexOf(Buffer.from(pki.leaf.der));
      expect(leafAt).toBeGreaterThan(0);
      docM[leafAt + Math.floor(pki.leaf.der.length / 3)]! ^= 1;
      const code = await codeOf(() => verify(docM, { at: AT, roots }));
      expect(['CERT_CHAIN_INVALID', 'BAD_SIGNATURE']).toContain(code);
    }
  });
  it('mutating the input during an in-flight pool verification does not poison the cache', async () => {
    const verify = createThreadPoolVerifier({ threads: 1 });
    const roots = [pki.root.pem];
    const doc = makeDocument(pki, { timestamp: AT - 1000 });
    const leafAt = Buffer.from(doc).indexOf(Buffer.from(pki.leaf.der));
    const p = verify(doc, { at: AT, roots });
    doc[leafAt + 100]! ^= 1; // after the synchronous part started
    expect(await codeOf(() => p)).toBe('NO_ERROR'); // verdict on bytes as received
    expect(await codeOf(() => verify(doc, { at: AT, roots }))).not.toBe('NO_ERROR');
    doc[leafAt + 100]! ^= 1;
    expect(await codeOf(() => verify(doc, { at: AT, roots }))).toBe('NO_ERROR');
    expect(cacheKey(pki.leaf.der).length).toBe(32);
  });
});

describe('review: roots memo', () => {
  it('an array whose elements change between reads (getter/Proxy) cannot make the memo pair list B with roots parsed from A', async () => {
    for (const verify of [createVerifier(), createThreadPoolVerifier({ threads: 1 })]) {
      const docT = makeDocument(twin, { timestamp: AT - 1000 });
      let reads = 0;
      // Reads 1 (the parse loop) see pki's root; later reads (every(), the copy) see twin's.
      const tricky = new Proxy([pki.root.pem], { get(t, k, r) { if (k === '0') return reads++ === 0 ? pki.root.pem : twin.root.pem; return Reflect.get(t, k, r); } });
      expect(await codeOf(() => verify(docT, { at: AT, roots: tricky }))).toBe('UNTRUSTED_ROOT');
      // Now a plain list naming ONLY twin's root: expected NO_ERROR for docT; pki doc expected UNTRUSTED_ROOT.
      const docA = makeDocument(pki, { timestamp: AT - 1000 });
      const tw = await codeOf(() => verify(docT, { at: AT, roots: [twin.root.pem] }));
      const a = await codeOf(() => verify(docA, { at: AT, roots: [twin.root.pem] }));
      console.log('roots memo after proxy:', { docT: tw, docA: a, reads });
      expect({ tw, a }).toEqual({ tw: 'NO_ERROR', a: 'UNTRUSTED_ROOT' });
    }
  });
});
