/**
 * The cache of signature-verified certificates is found by a slot (a certificate's last 32 bytes, chain.ts cacheKey)
 * instead of SHA-256(cert) + SHA-256(issuer) (issue 15). A slot is not an identity: a hit must be the same DER byte
 * for byte, verified under the same issuer. These are the two ways a slot could be shared.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { parseCertificate } from '../../broker/verify/certificate.js';
import { cacheKey, validateChain, type ChainContext, type VerifiedCertificate } from '../../broker/verify/chain.js';
import { Lru } from '../../broker/verify/lru.js';
import { createThreadPoolVerifier, createVerifier } from '../../broker/verify/verify.js';
import { isAttestationError } from '../../broker/verify/errors.js';
import { makeDocument } from '../support/document.js';
import { createTestPki, type Issued, type TestPki } from '../support/pki.js';
import { codeOf } from '../support/codes.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);

let pki: TestPki;
let twin: TestPki;

beforeAll(async () => {
  pki = await createTestPki(AT);
  // Another PKI with the same names at every level and other keys.
  twin = await createTestPki(AT);
}, 60_000);

/** `der` with one byte inside its TBSCertificate (in the subject's last byte region, well before the signature) changed. */
function tampered(der: Uint8Array): Uint8Array {
  const out = new Uint8Array(der);
  out[Math.floor(der.length / 3)]! ^= 0x01;
  return out;
}

describe('the verified-certificate cache', () => {
  it('a certificate that shares a cached one\'s slot (same signature bytes, one TBS byte changed) is verified, not taken from the cache', () => {
    const cache = new Lru<string, VerifiedCertificate>(16);
    const ctx: ChainContext = { roots: [parseCertificate(pki.root.der, 'root')], at: AT, cache };
    expect(codeOf(() => validateChain(pki.leaf.der, pki.cabundle, ctx))).toBe('NO_ERROR');
    const forgedLeaf = tampered(pki.leaf.der);
    expect(cacheKey(forgedLeaf)).toBe(cacheKey(pki.leaf.der));
    expect(codeOf(() => validateChain(forgedLeaf, pki.cabundle, ctx))).toBe('CERT_CHAIN_INVALID');
    const lastCa = pki.cabundle.length - 1;
    const forgedCa = [...pki.cabundle.slice(0, lastCa), tampered(pki.cabundle[lastCa]!)];
    expect(cacheKey(forgedCa[lastCa]!)).toBe(cacheKey(pki.cabundle[lastCa]!));
    expect(codeOf(() => validateChain(pki.leaf.der, forgedCa, ctx))).toBe('CERT_CHAIN_INVALID');
    // The genuine chain still verifies afterwards.
    expect(codeOf(() => validateChain(pki.leaf.der, pki.cabundle, ctx))).toBe('NO_ERROR');
  });

  it('a cached certificate presented under another issuer of the same name is checked under that issuer', () => {
    const cache = new Lru<string, VerifiedCertificate>(16);
    const ctx: ChainContext = { roots: [parseCertificate(pki.root.der, 'root'), parseCertificate(twin.root.der, 'root')], at: AT, cache };
    expect(codeOf(() => validateChain(pki.leaf.der, pki.cabundle, ctx))).toBe('NO_ERROR');
    // The twin's chain has the same names; pki's leaf (cached, verified under pki's instance CA) is not signed by the twin's.
    expect(codeOf(() => validateChain(pki.leaf.der, twin.cabundle, ctx))).toBe('CERT_CHAIN_INVALID');
    // pki's regional CA (cached under pki's root) presented under the twin's root.
    expect(codeOf(() => validateChain(pki.leaf.der, [twin.root.der, ...pki.cabundle.slice(1)], ctx))).toBe('CERT_CHAIN_INVALID');
    expect(codeOf(() => validateChain(twin.leaf.der, twin.cabundle, ctx))).toBe('NO_ERROR');
  });

  it('whole documents: a tampered leaf after the genuine one is refused by both verifiers, and the genuine one still verifies', async () => {
    const sync = createVerifier();
    const pool = createThreadPoolVerifier({ threads: 1 });
    const options = { at: AT, roots: [pki.root.pem] };
    const genuine = makeDocument(pki, { timestamp: AT - 1000 });
    const forged: Issued = { ...pki.leaf, der: tampered(pki.leaf.der) };
    const bad = makeDocument(pki, { timestamp: AT - 1000 }, forged);
    const codeAsync = async (p: Promise<unknown>): Promise<string> => p.then(() => 'NO_ERROR', (err: unknown) => (isAttestationError(err) ? err.code : Promise.reject(err)));
    expect(codeOf(() => sync(genuine, options))).toBe('NO_ERROR');
    expect(await codeAsync(pool(genuine, options))).toBe('NO_ERROR');
    expect(codeOf(() => sync(bad, options))).toBe('CERT_CHAIN_INVALID');
    expect(await codeAsync(pool(bad, options))).toBe('CERT_CHAIN_INVALID');
    expect(codeOf(() => sync(genuine, options))).toBe('NO_ERROR');
  });
});
