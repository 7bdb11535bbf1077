// validateChain on its own: bundle size limits, the pinned-root rule, the
// exact edges of every certificate's validity, CA constraints at their
// boundaries, and the cache of signature-verified certificates it fills.
import { createHash, webcrypto } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import * as x509 from '@peculiar/x509';
import { parseCertificate } from '../../broker/verify/certificate.js';
import { cacheKey, validateChain, type ChainContext, type VerifiedCertificate } from '../../broker/verify/chain.js';
import { Lru } from '../../broker/verify/lru.js';
import { createTestPki, issue, issueLeaf, type TestPki } from '../support/pki.js';
import { codeOf } from '../support/codes.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
const sha = (der: Uint8Array): string => createHash('sha256').update(der).digest('hex');

let pki: TestPki;
let edges: TestPki;
let other: TestPki;

beforeAll(async () => {
  pki = await createTestPki(AT);
  // Whole seconds, as X.509 stores them.
  edges = await createTestPki(AT, { root: { notBefore: AT - 4_000 }, zonal: { notAfter: AT + 2_000 } });
  other = await createTestPki(AT);
}, 60_000);

function ctx(p: TestPki, at = AT, cache = new Lru<string, VerifiedCertificate>(16)): ChainContext {
  return { roots: [parseCertificate(p.root.der, 'root')], at, cache };
}

describe('validateChain', () => {
  it('returns the leaf and the pinned root it ended at, and caches what it verified', () => {
    const c = ctx(pki);
    const result = validateChain(pki.leaf.der, pki.cabundle, c);
    expect(result.root).toBe(c.roots[0]);
    expect(result.leaf.sha256).toBe(sha(pki.leaf.der));
    // The three intermediates and the leaf, each with the issuer it was verified under.
    expect(c.cache.size).toBe(4);
    const chain = [...pki.cabundle, pki.leaf.der];
    for (let i = 1; i < chain.length; i++) expect(c.cache.get(cacheKey(chain[i]!))).toMatchObject({ cert: { sha256: sha(chain[i]!) }, issuerSha256: sha(chain[i - 1]!) });
    // A second pass over the same context gives the same answer from the cache.
    expect(validateChain(pki.leaf.der, pki.cabundle, c).leaf.sha256).toBe(sha(pki.leaf.der));
  });

  it('refuses an empty bundle as untrusted', () => {
    expect(codeOf(() => validateChain(pki.leaf.der, [], ctx(pki)))).toBe('UNTRUSTED_ROOT');
  });

  it('refuses a bundle whose first certificate is not pinned, however short', () => {
    expect(codeOf(() => validateChain(pki.leaf.der, [other.root.der], ctx(pki)))).toBe('UNTRUSTED_ROOT');
    expect(codeOf(() => validateChain(pki.leaf.der, [pki.cabundle[1]!, ...pki.cabundle.slice(2)], ctx(pki)))).toBe('UNTRUSTED_ROOT');
  });

  it('looks at a bundle of 8 certificates, refuses 9 outright', () => {
    const eight = [other.root.der, ...new Array<Uint8Array>(7).fill(pki.cabundle[1]!)];
    expect(codeOf(() => validateChain(pki.leaf.der, eight, ctx(pki)))).toBe('UNTRUSTED_ROOT');
    expect(codeOf(() => validateChain(pki.leaf.der, [...eight, pki.cabundle[1]!], ctx(pki)))).toBe('CERT_CHAIN_INVALID');
  });

  it('accepts a root that is its own whole chain only for a leaf it signed', async () => {
    const leaf = await issue({ ...(await import('../support/pki.js')).defaultSpecs(AT).leaf }, pki.root);
    expect(validateChain(leaf.der, [pki.root.der], ctx(pki)).leaf.sha256).toBe(sha(leaf.der));
    expect(codeOf(() => validateChain(pki.leaf.der, [pki.root.der], ctx(pki)))).toBe('CERT_CHAIN_INVALID');
  });

  it.each([
    ['the leaf: not before', (p: TestPki) => p.leaf.cert.notBefore.getTime(), 'before'],
    ['the leaf: not after', (p: TestPki) => p.leaf.cert.notAfter.getTime(), 'after'],
  ])('holds %s to the millisecond', (_name, edge, side) => {
    const t = edge(pki);
    expect(codeOf(() => validateChain(pki.leaf.der, pki.cabundle, ctx(pki, t)))).toBe('NO_ERROR');
    expect(codeOf(() => validateChain(pki.leaf.der, pki.cabundle, ctx(pki, side === 'before' ? t - 1 : t + 1)))).toBe('CERT_EXPIRED');
  });

  it('holds the root and the intermediates to their validity edges too, cached or not', () => {
    const cache = new Lru<string, VerifiedCertificate>(16);
    expect(codeOf(() => validateChain(edges.leaf.der, edges.cabundle, ctx(edges, AT - 4_000, cache)))).toBe('NO_ERROR');
    expect(codeOf(() => validateChain(edges.leaf.der, edges.cabundle, ctx(edges, AT - 4_001, cache)))).toBe('CERT_EXPIRED');
    expect(codeOf(() => validateChain(edges.leaf.der, edges.cabundle, ctx(edges, AT + 2_000, cache)))).toBe('NO_ERROR');
    expect(codeOf(() => validateChain(edges.leaf.der, edges.cabundle, ctx(edges, AT + 2_001, cache)))).toBe('CERT_EXPIRED');
  });

  it('refuses a leaf that is a CA, or whose keyUsage lacks digitalSignature; accepts one without keyUsage', async () => {
    const caLeaf = await issueLeaf(pki, { ca: true });
    expect(codeOf(() => validateChain(caLeaf.der, pki.cabundle, ctx(pki)))).toBe('CERT_CHAIN_INVALID');
    const signOnly = await issueLeaf(pki, { keyUsage: x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.nonRepudiation });
    expect(codeOf(() => validateChain(signOnly.der, pki.cabundle, ctx(pki)))).toBe('CERT_CHAIN_INVALID');
    const noUsage = await issueLeaf(pki, { keyUsage: undefined });
    expect(codeOf(() => validateChain(noUsage.der, pki.cabundle, ctx(pki)))).toBe('NO_ERROR');
    const onlyDigital = await issueLeaf(pki, { keyUsage: x509.KeyUsageFlags.digitalSignature });
    expect(codeOf(() => validateChain(onlyDigital.der, pki.cabundle, ctx(pki)))).toBe('NO_ERROR');
  });

  it('refuses a CA whose path length is one short, accepts it exact or absent', async () => {
    const short = await createTestPki(AT, { zonal: { pathLen: 0 } });
    expect(codeOf(() => validateChain(short.leaf.der, short.cabundle, ctx(short)))).toBe('CERT_CHAIN_INVALID');
    const open = await createTestPki(AT, { regional: { pathLen: undefined }, zonal: { pathLen: undefined }, instance: { pathLen: undefined } });
    expect(codeOf(() => validateChain(open.leaf.der, open.cabundle, ctx(open)))).toBe('NO_ERROR');
  });

  it('refuses an intermediate without basicConstraints even though its keyUsage allows keyCertSign', async () => {
    const noBc = await createTestPki(AT, { zonal: { omitBasicConstraints: true, pathLen: undefined } });
    expect(codeOf(() => validateChain(noBc.leaf.der, noBc.cabundle, ctx(noBc)))).toBe('CERT_CHAIN_INVALID');
    expect(parseCertificate(noBc.cabundle[2]!, 'zonal').isCA).toBe(false);
  });

  it('refuses a root that is not a CA or cannot sign certificates, even when pinned', async () => {
    const notCa = await createTestPki(AT, { root: { omitBasicConstraints: true } });
    expect(codeOf(() => validateChain(notCa.leaf.der, notCa.cabundle, ctx(notCa)))).toBe('CERT_CHAIN_INVALID');
    const noCertSign = await createTestPki(AT, { root: { keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign } });
    expect(codeOf(() => validateChain(noCertSign.leaf.der, noCertSign.cabundle, ctx(noCertSign)))).toBe('CERT_CHAIN_INVALID');
    const rootPathLen = await createTestPki(AT, { root: { pathLen: 2 } });
    expect(codeOf(() => validateChain(rootPathLen.leaf.der, rootPathLen.cabundle, ctx(rootPathLen)))).toBe('CERT_CHAIN_INVALID');
    const rootPathLen3 = await createTestPki(AT, { root: { pathLen: 3 } });
    expect(codeOf(() => validateChain(rootPathLen3.leaf.der, rootPathLen3.cabundle, ctx(rootPathLen3)))).toBe('NO_ERROR');
  }, 60_000);

  it('refuses a certificate whose issuer name differs even though the issuer key signed it', async () => {
    const keys = (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
    const make = async (issuerName: x509.Name | string): Promise<Uint8Array> =>
      new Uint8Array(
        (
          await x509.X509CertificateGenerator.create({
            serialNumber: '01',
            subject: 'C=US, O=Amazon, OU=AWS, CN=leaf',
            issuer: issuerName,
            notBefore: new Date(AT - 60_000),
            notAfter: new Date(AT + 60_000),
            signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' },
            publicKey: keys.publicKey,
            signingKey: pki.intermediates[2]!.keys.privateKey,
          })
        ).rawData,
      );
    const named = await make(pki.intermediates[2]!.cert.subjectName);
    expect(codeOf(() => validateChain(named, pki.cabundle, ctx(pki)))).toBe('NO_ERROR');
    const renamed = await make('C=US, O=Amazon, OU=AWS, CN=someone else');
    expect(codeOf(() => validateChain(renamed, pki.cabundle, ctx(pki)))).toBe('CERT_CHAIN_INVALID');
  });

  it('refuses a signature that is not even a valid ECDSA encoding', () => {
    const leaf = pki.leaf.der.slice();
    // The last byte belongs to the signature's DER: break its structure.
    leaf[leaf.length - 1] = 0xff;
    leaf[leaf.length - 2] = 0xff;
    expect(codeOf(() => validateChain(leaf, pki.cabundle, ctx(pki)))).toBe('CERT_CHAIN_INVALID');
  });
});
