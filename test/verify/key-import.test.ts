/**
 * Differential (issue 15, goal 2): the asynchronous verifier imports a certificate's P-384 key from its point
 * (WebCrypto 'raw', importP384Point), the synchronous one through OpenSSL's SPKI decoder (importP384Spki). Both must
 * accept and refuse exactly the same keys: directly, over points on and off the curve, coordinates at and above p,
 * the identity and zero coordinates; and through whole documents whose leaf (re-signed by its real issuer) carries
 * such a key, or one in another form (compressed, infinity, hybrid, other lengths, another curve's OID): the same
 * error code from createVerifier and createThreadPoolVerifier, at the same step.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { importP384Point, importP384Spki, parseCertificate } from '../../broker/verify/certificate.js';
import { children, readTlv } from '../../broker/verify/der.js';
import { createThreadPoolVerifier, createVerifier } from '../../broker/verify/verify.js';
import { isAttestationError } from '../../broker/verify/errors.js';
import { createTestPki, issueLeaf, type Issued, type TestPki } from '../support/pki.js';
import { makeDocument } from '../support/document.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
const SPKI_PREFIX = Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex');
// secp384r1 field prime p and curve coefficient b (SEC 2).
const P = BigInt('0x' + 'ff'.repeat(31) + 'fe' + 'ff'.repeat(4) + '00'.repeat(8) + 'ff'.repeat(4));
const B = BigInt('0xb3312fa7e23ee7e4988e056be3f82d19181d9c6efe8141120314088f5013875ac656398d8a2ed19d2a85c8edd3ec2aef');

const be48 = (n: bigint): Buffer => Buffer.from(n.toString(16).padStart(96, '0'), 'hex');
const point = (x: bigint, y: bigint): Buffer => Buffer.concat([Buffer.of(0x04), be48(x), be48(y)]);
const spkiOf = (pt: Uint8Array): Buffer => Buffer.concat([SPKI_PREFIX, pt]);
const coords = (spki: Uint8Array): [bigint, bigint] => {
  const pt = Buffer.from(spki).subarray(SPKI_PREFIX.length + 1);
  return [BigInt('0x' + pt.subarray(0, 48).toString('hex')), BigInt('0x' + pt.subarray(48).toString('hex'))];
};
const onCurve = (x: bigint, y: bigint): boolean => x < P && y < P && (y * y - (x * x * x - 3n * x + B)) % P === 0n;

function freshSpki(): Buffer {
  return generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'der', type: 'spki' });
}

/** Both imports of one SPKI: whether each accepted it, and the keys they made (as SPKI DER) when they did. */
async function bothImports(spki: Uint8Array): Promise<{ viaSpki: string | false; viaPoint: string | false }> {
  const exported = (k: KeyObject): string => k.export({ format: 'der', type: 'spki' }).toString('hex');
  let viaSpki: string | false;
  try {
    viaSpki = exported(importP384Spki(spki));
  } catch {
    viaSpki = false;
  }
  let viaPoint: string | false;
  try {
    viaPoint = exported(await importP384Point(spki));
  } catch {
    viaPoint = false;
  }
  return { viaSpki, viaPoint };
}

/** Edge points: valid ones and every way a 97-byte uncompressed encoding can be wrong. */
function edgeSpkis(): Array<[string, Buffer]> {
  const valid = freshSpki();
  const [x, y] = coords(valid);
  const flipped = Buffer.from(valid);
  flipped[flipped.length - 1]! ^= 1;
  return [
    ['a fresh key', valid],
    ['its negation (x, p - y): on the curve', spkiOf(point(x, P - y))],
    ['y + p (same residue, not below p)', spkiOf(point(x, y + P <= (1n << 384n) - 1n ? y + P : y))],
    ['x + p when it fits (same residue)', spkiOf(point(x + P <= (1n << 384n) - 1n ? x + P : x, y))],
    ['one bit of y flipped (off the curve)', flipped],
    ['x = 0, y = 0', spkiOf(point(0n, 0n))],
    ['x = p, y = 0', spkiOf(point(P, 0n))],
    ['x = p - 1, y = p - 1', spkiOf(point(P - 1n, P - 1n))],
    ['all ones', spkiOf(Buffer.concat([Buffer.of(0x04), Buffer.alloc(96, 0xff)]))],
    ['x = 0, y = sqrt(b) candidate', spkiOf(point(0n, 1n))],
  ];
}

describe('P-384 key import: from the point (asynchronous verifier) and through the SPKI decoder (synchronous)', () => {
  it('accepts and refuses the same edge points, and makes the same key when it accepts', async () => {
    let accepted = 0;
    let refused = 0;
    for (const [name, spki] of edgeSpkis()) {
      const { viaSpki, viaPoint } = await bothImports(spki);
      expect({ name, viaPoint }).toEqual({ name, viaPoint: viaSpki });
      const [x, y] = coords(spki);
      expect({ name, accepted: viaSpki !== false }).toEqual({ name, accepted: onCurve(x, y) });
      if (viaSpki === false) refused++;
      else accepted++;
    }
    expect(accepted).toBeGreaterThanOrEqual(2);
    expect(refused).toBeGreaterThanOrEqual(6);
  });

  it('agrees on random points and random corruptions of real ones', async () => {
    const keys = Array.from({ length: 8 }, freshSpki);
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ minLength: 96, maxLength: 96 }).map((c) => spkiOf(Buffer.concat([Buffer.of(0x04), c]))),
          fc.tuple(fc.constantFrom(...keys), fc.integer({ min: SPKI_PREFIX.length + 1, max: SPKI_PREFIX.length + 96 }), fc.integer({ min: 1, max: 255 })).map(([k, at, xor]) => {
            const out = Buffer.from(k);
            out[at]! ^= xor;
            return out;
          }),
          fc.constantFrom(...keys),
        ),
        async (spki) => {
          const { viaSpki, viaPoint } = await bothImports(spki);
          expect(viaPoint).toEqual(viaSpki);
          const [x, y] = coords(spki);
          expect(viaSpki !== false).toBe(onCurve(x, y));
        },
      ),
      { numRuns: 300 },
    );
  });
});

// ---- whole documents: a leaf carrying the key, re-signed by its real issuer ----

const lengthBytes = (n: number): number[] => (n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff]);
const tlv = (tag: number, content: Uint8Array): Buffer => Buffer.concat([Buffer.of(tag, ...lengthBytes(content.length)), content]);

/** `leaf` with its SubjectPublicKeyInfo replaced by `spki` (any bytes), signed again by `issuer`: a genuine chain to a bad key. */
function withSpki(leaf: Issued, issuer: Issued, spki: Uint8Array): Issued {
  const [tbs, alg] = children(readTlv(leaf.der, 0));
  const fields = children(tbs!);
  // version, serial, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
  const parts = fields.map((f, i) => (i === 6 ? Buffer.from(spki) : Buffer.from(f.raw)));
  const newTbs = tlv(0x30, Buffer.concat(parts));
  const signature = sign('sha384', newTbs, { key: issuer.privateKey, dsaEncoding: 'der' });
  const der = tlv(0x30, Buffer.concat([newTbs, Buffer.from(alg!.raw), tlv(0x03, Buffer.concat([Buffer.of(0), signature]))]));
  return { ...leaf, der: new Uint8Array(der) };
}

type Verdict = { ok: true } | { code: string };

let pki: TestPki;
let leaf: Issued;

beforeAll(async () => {
  pki = await createTestPki(AT);
  leaf = await issueLeaf(pki);
});

describe('verification with a leaf key of every kind: createVerifier and createThreadPoolVerifier agree', () => {
  it('the same verdict and code for valid, off-curve, out-of-range, compressed, infinity, hybrid, short, long and wrong-curve keys', async () => {
    const issuer = pki.intermediates[pki.intermediates.length - 1]!;
    const own = Buffer.from(parseCertificate(leaf.der, 'leaf').der);
    expect(own.length).toBeGreaterThan(0);
    const ownSpki = Buffer.from(leaf.cert.publicKey.rawData);
    const [x, y] = coords(ownSpki);
    const compressed = Buffer.concat([Buffer.from('3046301006072a8648ce3d020106052b81040022033200', 'hex'), Buffer.of(0x02 | Number(y & 1n)), be48(x)]);
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const cases: Array<[string, Uint8Array, Verdict]> = [
      ['the leaf own key', ownSpki, { ok: true }],
      ['the negated point (on the curve, not the signer)', spkiOf(point(x, P - y)), { code: 'BAD_SIGNATURE' }],
      ['off the curve', spkiOf(point(x, (y + 1n) % P)), { code: 'CERT_CHAIN_INVALID' }],
      ['y not below p', spkiOf(point(x, P + 1n)), { code: 'CERT_CHAIN_INVALID' }],
      ['x = p', spkiOf(point(P, y)), { code: 'CERT_CHAIN_INVALID' }],
      ['all-zero coordinates', spkiOf(point(0n, 0n)), { code: 'CERT_CHAIN_INVALID' }],
      ['compressed', compressed, { code: 'CERT_CHAIN_INVALID' }],
      ['hybrid form (0x06/0x07)', (() => { const s = Buffer.from(ownSpki); s[SPKI_PREFIX.length] = 0x06 | Number(y & 1n); return s; })(), { code: 'CERT_CHAIN_INVALID' }],
      ['the point at infinity', Buffer.concat([Buffer.from('3018301006072a8648ce3d020106052b8104002203040000', 'hex')]), { code: 'CERT_CHAIN_INVALID' }],
      ['one byte short', Buffer.concat([Buffer.from('3075301006072a8648ce3d020106052b81040022036100', 'hex'), ownSpki.subarray(SPKI_PREFIX.length, -1)]), { code: 'CERT_CHAIN_INVALID' }],
      ['a P-256 key', p256, { code: 'CERT_CHAIN_INVALID' }],
    ];
    const sync = createVerifier();
    const pool = createThreadPoolVerifier({ threads: 1 });
    for (const [name, spki, expected] of cases) {
      const doc = makeDocument(pki, { timestamp: AT - 1000 }, withSpki(leaf, issuer, spki));
      const options = { at: AT, roots: [pki.root.pem] };
      let syncVerdict: Verdict;
      try {
        sync(doc, options);
        syncVerdict = { ok: true };
      } catch (err) {
        if (!isAttestationError(err)) throw err;
        syncVerdict = { code: err.code };
      }
      let poolVerdict: Verdict;
      try {
        await pool(doc, options);
        poolVerdict = { ok: true };
      } catch (err) {
        if (!isAttestationError(err)) throw err;
        poolVerdict = { code: err.code };
      }
      expect({ name, syncVerdict }).toEqual({ name, syncVerdict: expected });
      expect({ name, poolVerdict }).toEqual({ name, poolVerdict: expected });
    }
  });

  it('a refused key is refused at the parse, before the leaf validity: an expired leaf with an off-curve key is CERT_CHAIN_INVALID on both', async () => {
    const issuer = pki.intermediates[pki.intermediates.length - 1]!;
    const ownSpki = Buffer.from(leaf.cert.publicKey.rawData);
    const [x, y] = coords(ownSpki);
    const doc = makeDocument(pki, { timestamp: AT - 1000 }, withSpki(leaf, issuer, spkiOf(point(x, (y + 1n) % P))));
    const late = { at: AT + 5 * 3_600_000, roots: [pki.root.pem] };
    const codeOf = async (f: () => unknown): Promise<string> => {
      try {
        await f();
        return 'ok';
      } catch (err) {
        if (!isAttestationError(err)) throw err;
        return err.code;
      }
    };
    // The valid leaf at that time is expired: the check order is what is under test.
    expect(await codeOf(() => createVerifier()(makeDocument(pki, { timestamp: AT - 1000 }, leaf), late))).toBe('CERT_EXPIRED');
    expect(await codeOf(() => createVerifier()(doc, late))).toBe('CERT_CHAIN_INVALID');
    expect(await codeOf(() => createThreadPoolVerifier({ threads: 1 })(doc, late))).toBe('CERT_CHAIN_INVALID');
  });
});
