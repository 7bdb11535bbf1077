/**
 * The hand-rolled DER reader is cross-checked against @peculiar/x509 on every
 * real Nitro certificate, then fed malformed encodings.
 */
import { describe, expect, it } from 'vitest';
import { verify as cryptoVerify } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { decode } from 'cbor-x';
import { KeyUsage, parseCertificate } from '../../broker/verify/certificate.js';
import { DerError, Tag, oidToString, readSmallUint, readTime, readTlv } from '../../broker/verify/der.js';
import { AttestationError } from '../../index.js';
import { fixtureBytes, realDocuments } from '../support/fixtures.js';

interface Pair {
  label: string;
  der: Uint8Array;
  issuer: Uint8Array;
}

function realCertificates(): Pair[] {
  const out: Pair[] = [];
  for (const entry of realDocuments) {
    const payload = decode((decode(fixtureBytes(entry.file)) as Uint8Array[])[2]!) as { certificate: Uint8Array; cabundle: Uint8Array[] };
    const chain = [...payload.cabundle, payload.certificate];
    chain.forEach((der, i) => out.push({ label: `${entry.file}#${i}`, der, issuer: chain[Math.max(0, i - 1)]! }));
  }
  return out;
}

const pairs = realCertificates();

describe('parseCertificate agrees with @peculiar/x509 on real Nitro certificates', () => {
  it('has a realistic sample', () => expect(pairs.length).toBeGreaterThan(70));

  it.each(pairs)('$label', ({ der, issuer }) => {
    const ours = parseCertificate(der, 'cert');
    const ref = new x509.X509Certificate(der);
    expect(ours.notBefore).toBe(ref.notBefore.getTime());
    expect(ours.notAfter).toBe(ref.notAfter.getTime());
    expect(Buffer.from(ours.subject).equals(Buffer.from(ref.subjectName.toArrayBuffer()))).toBe(true);
    expect(Buffer.from(ours.issuer).equals(Buffer.from(ref.issuerName.toArrayBuffer()))).toBe(true);
    const bc = ref.getExtension(x509.BasicConstraintsExtension);
    expect(ours.isCA).toBe(bc?.ca ?? false);
    expect(ours.pathLen).toBe(bc?.pathLength);
    const ku = ref.getExtension(x509.KeyUsagesExtension);
    // peculiar numbers digitalSignature as 1, keyCertSign as 32: the same bit order as ours.
    expect(ours.keyUsage).toBe(ku?.usages);
    expect(Buffer.from(ours.publicKey.export({ type: 'spki', format: 'der' })).equals(Buffer.from(ref.publicKey.rawData))).toBe(true);
    const issuerKey = parseCertificate(issuer, 'issuer').publicKey;
    expect(cryptoVerify('sha384', ours.tbs, { key: issuerKey, dsaEncoding: 'der' }, ours.signature)).toBe(true);
    if (ours.isCA) expect(ours.keyUsage! & KeyUsage.keyCertSign).toBeTruthy();
  });
});

function der(tag: number, content: number[]): Uint8Array {
  return Uint8Array.from([tag, content.length, ...content]);
}

describe('DER reader', () => {
  it('reads short and long lengths', () => {
    expect(readTlv(der(0x04, [1, 2, 3]), 0).content).toEqual(Uint8Array.of(1, 2, 3));
    const long = Uint8Array.from([0x04, 0x81, 0x80, ...new Array(128).fill(9)]);
    expect(readTlv(long, 0).content.length).toBe(128);
  });

  it.each([
    ['indefinite length', Uint8Array.of(0x30, 0x80, 0x00, 0x00)],
    ['non-minimal long length', Uint8Array.of(0x04, 0x81, 0x05, 1, 2, 3, 4, 5)],
    ['leading zero in length', Uint8Array.of(0x04, 0x82, 0x00, 0x85, ...new Array(0x85).fill(0))],
    ['length past the end', Uint8Array.of(0x04, 0x05, 1, 2)],
    ['truncated length bytes', Uint8Array.of(0x04, 0x82, 0x01)],
    ['five length bytes', Uint8Array.of(0x04, 0x84, 1, 0, 0, 0)],
    ['high tag number', Uint8Array.of(0x1f, 0x81, 0x00)],
    ['one byte only', Uint8Array.of(0x04)],
  ])('rejects %s', (_name, bytes) => {
    expect(() => readTlv(bytes, 0)).toThrow(DerError);
  });

  it('parses OIDs and rejects bad ones', () => {
    expect(oidToString(Uint8Array.of(0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03))).toBe('1.2.840.10045.4.3.3');
    expect(oidToString(Uint8Array.of(0x55, 0x1d, 0x13))).toBe('2.5.29.19');
    expect(() => oidToString(new Uint8Array())).toThrow(DerError);
    expect(() => oidToString(Uint8Array.of(0x2a, 0x86))).toThrow(DerError);
    expect(() => oidToString(Uint8Array.of(0x2a, 0x80, 0x01))).toThrow(DerError);
  });

  it('reads strict times', () => {
    const utc = (s: string): Uint8Array => Uint8Array.from([Tag.UtcTime, s.length, ...Buffer.from(s)]);
    const gen = (s: string): Uint8Array => Uint8Array.from([Tag.GeneralizedTime, s.length, ...Buffer.from(s)]);
    expect(readTime(readTlv(utc('221109225157Z'), 0))).toBe(Date.UTC(2022, 10, 9, 22, 51, 57));
    expect(readTime(readTlv(utc('491028142805Z'), 0))).toBe(Date.UTC(2049, 9, 28, 14, 28, 5));
    expect(readTime(readTlv(utc('500101000000Z'), 0))).toBe(Date.UTC(1950, 0, 1));
    expect(readTime(readTlv(gen('20500101000000Z'), 0))).toBe(Date.UTC(2050, 0, 1));
    for (const bad of ['221309225157Z', '221132225157Z', '221109245157Z', '2211092251Z', '221109225157+0100', '22110922515Z']) {
      expect(() => readTime(readTlv(utc(bad), 0)), bad).toThrow(DerError);
    }
    expect(() => readTime(readTlv(der(Tag.OctetString, [0x31]), 0))).toThrow(DerError);
  });

  it('reads small unsigned integers strictly', () => {
    expect(readSmallUint(readTlv(der(Tag.Integer, [2]), 0))).toBe(2);
    expect(readSmallUint(readTlv(der(Tag.Integer, [0x00, 0x80]), 0))).toBe(128);
    expect(() => readSmallUint(readTlv(der(Tag.Integer, [0xff]), 0))).toThrow(DerError);
    expect(() => readSmallUint(readTlv(der(Tag.Integer, [0x00, 0x01]), 0))).toThrow(DerError);
    expect(() => readSmallUint(readTlv(der(Tag.Integer, []), 0))).toThrow(DerError);
  });
});

describe('parseCertificate on malformed certificates', () => {
  const leaf = pairs.find((p) => p.label.endsWith('#4'))!.der;

  function codeOf(bytes: Uint8Array): string {
    try {
      parseCertificate(bytes, 'leaf');
      return 'NO_ERROR';
    } catch (err) {
      return err instanceof AttestationError ? err.code : `unexpected ${String(err)}`;
    }
  }

  it('rejects every truncation of a real leaf', () => {
    for (let len = 0; len < leaf.length; len++) expect(codeOf(leaf.subarray(0, len)), `length ${len}`).toBe('CERT_CHAIN_INVALID');
  });

  it('rejects trailing bytes', () => {
    expect(codeOf(Buffer.concat([leaf, Uint8Array.of(0)]))).toBe('CERT_CHAIN_INVALID');
  });

  it('never throws anything but the typed error for byte flips in the structure', () => {
    for (let offset = 0; offset < leaf.length; offset++) {
      const mutated = leaf.slice();
      mutated[offset]! ^= 0x80;
      expect(codeOf(mutated)).toMatch(/^(CERT_CHAIN_INVALID|NO_ERROR)$/);
    }
  });
});
