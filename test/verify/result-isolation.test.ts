/**
 * What a verifier returns is the caller's to keep and to change: the bytes of a
 * verified result share nothing with the input document nor with the
 * verifier's cache of signature-checked certificates, so changing them cannot
 * change a later verification (issue 15 removed per-field copies; these hold
 * the line that the copies were for).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { createHash, sign } from 'node:crypto';
import { createVerifier, type VerifyOptions } from '../../index.js';
import { createTestPki, issueLeaf, type TestPki } from '../support/pki.js';
import { makeDocument } from '../support/document.js';
import { codeOf } from '../support/codes.js';
import { AttestationError } from '../../broker/verify/errors.js';
import { children, readTlv } from '../../broker/verify/der.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
let pki: TestPki;

beforeAll(async () => {
  pki = await createTestPki(AT);
});

function opts(): VerifyOptions {
  return { at: AT, roots: [pki.root.pem] };
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

describe('verified results are isolated', () => {
  it('zeroing a result’s certificate bytes leaves the cached leaf intact for the next document', async () => {
    const leaf = await issueLeaf(pki);
    const verify = createVerifier();
    const first = verify(makeDocument(pki, { nonce: new Uint8Array(32).fill(1) }, leaf), opts());
    first.certificate.fill(0);
    first.signingCertificate.der.fill(0);
    const second = verify(makeDocument(pki, { nonce: new Uint8Array(32).fill(2) }, leaf), opts());
    expect(Buffer.from(second.signingCertificate.der).equals(Buffer.from(leaf.der))).toBe(true);
    expect(second.signingCertificate.sha256).toBe(sha256(leaf.der));
  });

  it('zeroing a result’s CA bundle leaves the cached intermediates intact for the next enclave', async () => {
    const verify = createVerifier();
    const first = verify(makeDocument(pki, { nonce: new Uint8Array(32).fill(3) }), opts());
    for (const ca of first.cabundle) ca.fill(0);
    // A new leaf is checked against the cached issuer's subject and key.
    const next = await issueLeaf(pki);
    expect(codeOf(() => verify(makeDocument(pki, { nonce: new Uint8Array(32).fill(4) }, next), opts()))).toBe('NO_ERROR');
  });

  it('a Buffer document gives plain Uint8Arrays that do not alias it', () => {
    const document = Buffer.from(makeDocument(pki, { nonce: new Uint8Array(32).fill(5), userData: Buffer.from('user') }));
    const doc = createVerifier()(document, opts());
    const fields = [doc.certificate, doc.nonce!, doc.userData!, doc.pcrs.get(0)!, ...doc.cabundle, doc.signingCertificate.der];
    const before = fields.map((f) => Buffer.from(f).toString('hex'));
    document.fill(0);
    expect(fields.map((f) => Buffer.from(f).toString('hex'))).toEqual(before);
    for (const f of fields) expect(Object.getPrototypeOf(f)).toBe(Uint8Array.prototype);
  });
});

/** DER length octets for `n`. */
function derLength(n: number): Uint8Array {
  return n < 0x80 ? Uint8Array.of(n) : n < 0x100 ? Uint8Array.of(0x81, n) : Uint8Array.of(0x82, n >> 8, n & 0xff);
}

describe('a new leaf’s key is checked after its signature, as before', () => {
  it('a correctly signed leaf whose key point is off the curve is CERT_CHAIN_INVALID (unreadable public key)', async () => {
    const leaf = await issueLeaf(pki);
    const cert = readTlv(leaf.der, 0);
    const [tbs, alg] = children(cert);
    const tbsBytes = Uint8Array.from(tbs!.raw);
    // The SubjectPublicKeyInfo's last byte is the point's last byte (the key precedes the [3] extensions, so find it).
    const spkiAt = Buffer.from(tbsBytes).indexOf(Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex'));
    expect(spkiAt).toBeGreaterThan(0);
    tbsBytes[spkiAt + 23 + 96]! ^= 0x01;
    const issuer = pki.intermediates[pki.intermediates.length - 1]!;
    const signature = sign('sha384', tbsBytes, issuer.privateKey);
    const bits = Buffer.concat([Uint8Array.of(0x03), derLength(signature.length + 1), Uint8Array.of(0x00), signature]);
    const body = Buffer.concat([tbsBytes, alg!.raw, bits]);
    const der = new Uint8Array(Buffer.concat([Uint8Array.of(0x30), derLength(body.length), body]));
    let thrown: unknown;
    try {
      createVerifier()(makeDocument(pki, {}, { ...leaf, der }), opts());
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(AttestationError);
    expect((thrown as AttestationError).code).toBe('CERT_CHAIN_INVALID');
    expect((thrown as AttestationError).message).toMatch(/^leaf certificate: unreadable public key/);
  });
});
