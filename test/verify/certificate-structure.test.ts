// parseCertificate field by field: certificates rebuilt from a real Nitro
// leaf with one part changed at a time, so each rule is shown to be the one
// that refuses (CERT_CHAIN_INVALID), and each accepted variant is read right.
import { createHash, generateKeyPairSync } from 'node:crypto';
import { decode } from 'cbor-x';
import { describe, expect, it } from 'vitest';
import { KeyUsage, parseCertificate, type ParsedCertificate } from '../../broker/verify/certificate.js';
import { children, readTlv } from '../../broker/verify/der.js';
import { AttestationError } from '../../broker/verify/errors.js';
import { fixtureBytes, realDocuments } from '../support/fixtures.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s/g, ''), 'hex'));
const cat = (...parts: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(parts));
const lengthBytes = (n: number): number[] => (n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff]);
const tlv = (tag: number, ...content: Uint8Array[]): Uint8Array => {
  const c = cat(...content);
  return cat(Uint8Array.of(tag, ...lengthBytes(c.length)), c);
};
const seq = (...content: Uint8Array[]): Uint8Array => tlv(0x30, ...content);
const oid = (dotted: string): Uint8Array => {
  const [a, b, ...rest] = dotted.split('.').map(Number) as [number, number, ...number[]];
  const bytes = [a * 40 + b];
  for (const arc of rest) {
    const enc = [arc & 0x7f];
    for (let v = arc >> 7; v > 0; v >>= 7) enc.unshift((v & 0x7f) | 0x80);
    bytes.push(...enc);
  }
  return tlv(0x06, Uint8Array.from(bytes));
};
const TRUE = hex('0101ff');
const FALSE = hex('010100');
const int = (...bytes: number[]): Uint8Array => tlv(0x02, Uint8Array.from(bytes));
const octets = (...content: Uint8Array[]): Uint8Array => tlv(0x04, ...content);
const bits = (...bytes: number[]): Uint8Array => tlv(0x03, Uint8Array.from(bytes));

const ECDSA_SHA384 = hex('300a06082a8648ce3d040303');
const ECDSA_SHA256 = hex('300a06082a8648ce3d040302');
const BASIC_CONSTRAINTS = '2.5.29.19';
const KEY_USAGE = '2.5.29.15';

/** The parts of the real leaf of the first real document. */
function realLeafParts(): Record<'version' | 'serial' | 'alg' | 'issuer' | 'validity' | 'subject' | 'spki' | 'sig', Uint8Array> {
  const entry = realDocuments[0]!;
  const payload = decode((decode(fixtureBytes(entry.file)) as Uint8Array[])[2]!) as { certificate: Uint8Array };
  const der = Uint8Array.from(payload.certificate);
  const [tbs, , sig] = children(readTlv(der, 0));
  const f = children(tbs!);
  return { version: f[0]!.raw, serial: f[1]!.raw, alg: f[2]!.raw, issuer: f[3]!.raw, validity: f[4]!.raw, subject: f[5]!.raw, spki: f[6]!.raw, sig: sig!.raw };
}

type Parts = ReturnType<typeof realLeafParts>;
const PARTS: Parts = realLeafParts();

interface Shape {
  /** TBSCertificate fields in order (null drops one). */
  readonly tbs?: ReadonlyArray<Uint8Array | null>;
  readonly tbsTag?: number;
  readonly outerAlg?: Uint8Array;
  readonly sig?: Uint8Array;
  readonly extra?: readonly Uint8Array[];
}

function tbsFields(over: Partial<Parts> = {}, extensions?: Uint8Array): Uint8Array[] {
  const p = { ...PARTS, ...over };
  return [p.version, p.serial, p.alg, p.issuer, p.validity, p.subject, p.spki, ...(extensions ? [extensions] : [])];
}

function certificate({ tbs = tbsFields(), tbsTag = 0x30, outerAlg = ECDSA_SHA384, sig = PARTS.sig, extra = [] }: Shape = {}): Uint8Array {
  return seq(tlv(tbsTag, ...tbs.filter((f): f is Uint8Array => f !== null)), outerAlg, sig, ...extra);
}

/** [3] EXPLICIT Extensions holding these extensions. */
const extensions = (...list: Uint8Array[]): Uint8Array => tlv(0xa3, seq(...list));
const extension = (id: string, value: Uint8Array, critical?: Uint8Array): Uint8Array => seq(oid(id), ...(critical ? [critical] : []), octets(value));
const withExtensions = (...list: Uint8Array[]): Uint8Array => certificate({ tbs: tbsFields({}, extensions(...list)) });

function refusal(der: Uint8Array, label = 'leaf'): AttestationError {
  try {
    parseCertificate(der, label);
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    expect((err as AttestationError).code).toBe('CERT_CHAIN_INVALID');
    return err as AttestationError;
  }
  return expect.unreachable('accepted');
}

function refused(der: Uint8Array, detail: RegExp): void {
  const err = refusal(der);
  expect(err.message).toMatch(/^leaf: /);
  expect(err.message).toMatch(detail);
}

describe('parseCertificate reads an accepted certificate exactly', () => {
  it('reads every field of the rebuilt leaf', () => {
    const der = certificate();
    const cert = parseCertificate(der, 'leaf');
    expect(cert.der).toBe(der);
    expect(cert.sha256).toBe(createHash('sha256').update(der).digest('hex'));
    const [tbs, , sig] = children(readTlv(der, 0));
    expect(Buffer.from(cert.tbs).equals(Buffer.from(tbs!.raw))).toBe(true);
    expect(Buffer.from(cert.signature).equals(Buffer.from(sig!.content.subarray(1)))).toBe(true);
    expect(Buffer.from(cert.issuer).equals(Buffer.from(PARTS.issuer))).toBe(true);
    expect(Buffer.from(cert.subject).equals(Buffer.from(PARTS.subject))).toBe(true);
    expect(cert.notBefore).toBeLessThan(cert.notAfter);
    const [from, to] = children(readTlv(PARTS.validity, 0));
    expect(new Date(cert.notBefore).toISOString().replace(/[-:T]|\.000/g, '').slice(2)).toBe(Buffer.from(from!.content).toString());
    expect(new Date(cert.notAfter).toISOString().replace(/[-:T]|\.000/g, '').slice(2)).toBe(Buffer.from(to!.content).toString());
    expect(Buffer.from(cert.publicKey.export({ type: 'spki', format: 'der' })).equals(Buffer.from(PARTS.spki))).toBe(true);
    // No extensions: not a CA, no path length, no key usage.
    expect([cert.isCA, cert.pathLen, cert.keyUsage]).toEqual([false, undefined, undefined]);
  });

  it('exports the RFC 5280 key usage bit numbers', () => {
    expect(KeyUsage).toEqual({ digitalSignature: 1, keyCertSign: 32 });
  });

  it.each([
    ['1-byte signature', bits(0x00, 0x01), '01'],
    ['2-byte signature', bits(0x00, 0xab, 0xcd), 'abcd'],
  ])('keeps the signature bytes: %s', (_name, sig, hexSig) => {
    expect(Buffer.from(parseCertificate(certificate({ sig }), 'leaf').signature).toString('hex')).toBe(hexSig);
  });

  it.each([
    ['1 byte', int(0x01)],
    ['20 bytes', int(...new Array<number>(20).fill(0x11))],
    ['21 bytes (sign byte)', int(0x00, ...new Array<number>(20).fill(0x91))],
  ])('accepts a serial of %s', (_name, serial) => {
    expect(parseCertificate(certificate({ tbs: tbsFields({ serial }) }), 'leaf').subject).toBeDefined();
  });

  it.each([
    ['issuerUniqueID [1]', hex('8101 00')],
    ['subjectUniqueID [2]', hex('8201 00')],
    ['constructed [1]', hex('a100')],
    ['constructed [2]', hex('a200')],
  ])('ignores an obsolete %s, with or without extensions after it', (_name, field) => {
    expect(parseCertificate(certificate({ tbs: [...tbsFields(), field] }), 'leaf').isCA).toBe(false);
    expect(parseCertificate(certificate({ tbs: [...tbsFields(), field, hex('8101 00'), extensions(extension(BASIC_CONSTRAINTS, seq(TRUE)))] }), 'leaf').isCA).toBe(true);
  });
});

describe('parseCertificate refuses a malformed outer structure', () => {
  it.each([
    ['another outer signature algorithm', certificate({ outerAlg: ECDSA_SHA256 }), /not ecdsa-with-SHA384/],
    ['an outer algorithm with parameters', certificate({ outerAlg: seq(oid('1.2.840.10045.4.3.3'), hex('0500')) }), /not ecdsa-with-SHA384/],
    ['a fourth element', certificate({ extra: [hex('0500')] }), /3 elements/],
    ['no signature', seq(tlv(0x30, ...tbsFields()), ECDSA_SHA384), /3 elements/],
    ['only the TBS', seq(tlv(0x30, ...tbsFields())), /3 elements/],
    ['an empty Certificate', seq(), /3 elements/],
    ['a TBS that is a SET', certificate({ tbsTag: 0x31 }), /TBSCertificate must be a SEQUENCE/],
    ['a signature in an OCTET STRING', certificate({ sig: octets(hex('00ab')) }), /whole-byte BIT STRING/],
    ['an empty signature BIT STRING', certificate({ sig: bits(0x00) }), /whole-byte BIT STRING/],
    ['a signature with unused bits', certificate({ sig: bits(0x01, 0xab) }), /whole-byte BIT STRING/],
    ['trailing bytes', cat(certificate(), Uint8Array.of(0)), /trailing bytes after Certificate/],
    ['not a SEQUENCE', tlv(0x31, ...tbsFields()), /Certificate/],
  ])('%s', (_name, der, detail) => {
    refused(der, detail);
  });

  it('names the certificate it refuses and keeps the cause', () => {
    const err = refusal(certificate({ outerAlg: ECDSA_SHA256 }), 'cabundle[2]');
    expect(err.message).toMatch(/^cabundle\[2\]: signature algorithm is not ecdsa-with-SHA384$/);
    expect((err as Error & { cause?: unknown }).cause).toBeInstanceOf(Error);
  });
});

describe('parseCertificate refuses a malformed TBSCertificate', () => {
  const v = PARTS;
  it.each([
    ['no version (v1)', [v.serial, v.alg, v.issuer, v.validity, v.subject, v.spki], /X\.509 v3/],
    ['version v2', tbsFields({ version: tlv(0xa0, int(0x01)) }), /X\.509 v3/],
    ['version v4', tbsFields({ version: tlv(0xa0, int(0x03)) }), /X\.509 v3/],
    ['a version with trailing bytes', tbsFields({ version: tlv(0xa0, int(0x02), hex('0500')) }), /X\.509 v3/],
    ['a version in [1]', tbsFields({ version: tlv(0xa1, int(0x02)) }), /X\.509 v3/],
    ['an empty TBS', [], /X\.509 v3/],
    ['a serial that is not an INTEGER', tbsFields({ serial: octets(hex('01')) }), /invalid serial number/],
    ['an empty serial', tbsFields({ serial: int() }), /invalid serial number/],
    ['a 22-byte serial', tbsFields({ serial: int(0x00, ...new Array<number>(21).fill(0x91)) }), /invalid serial number/],
    ['no serial', [v.version], /invalid serial number/],
    ['another TBS algorithm', tbsFields({ alg: ECDSA_SHA256 }), /TBS signature algorithm/],
    ['no TBS algorithm', [v.version, v.serial], /TBS signature algorithm/],
    ['an issuer that is a SET', tbsFields({ issuer: tlv(0x31) }), /must be SEQUENCEs/],
    ['a subject that is a SET', tbsFields({ subject: tlv(0x31) }), /must be SEQUENCEs/],
    ['a key that is a SET', tbsFields({ spki: tlv(0x31) }), /must be SEQUENCEs/],
    ['no issuer', [v.version, v.serial, v.alg], /must be SEQUENCEs/],
    ['no subject or key', [v.version, v.serial, v.alg, v.issuer, v.validity], /must be SEQUENCEs/],
    ['no key', [v.version, v.serial, v.alg, v.issuer, v.validity, v.subject], /must be SEQUENCEs/],
    ['a validity that is a SET', tbsFields({ validity: tlv(0x31, ...children(readTlv(v.validity, 0)).map((t) => t.raw)) }), /validity must be a SEQUENCE/],
    ['one validity time', tbsFields({ validity: seq(children(readTlv(v.validity, 0))[0]!.raw) }), /two times/],
    ['three validity times', tbsFields({ validity: seq(...children(readTlv(v.validity, 0)).map((t) => t.raw), children(readTlv(v.validity, 0))[0]!.raw) }), /two times/],
    ['a validity time that is not a time', tbsFields({ validity: seq(octets(hex('00')), children(readTlv(v.validity, 0))[1]!.raw) }), /UTCTime or GeneralizedTime/],
    ['an unexpected field after the key', [...tbsFields(), hex('a400')], /unexpected field in TBSCertificate/],
    ['a field after the extensions', [...tbsFields({}, extensions()), hex('8101 00')], /unexpected trailing fields/],
    ['two extension blocks', [...tbsFields({}, extensions()), extensions()], /unexpected trailing fields/],
  ])('%s', (_name, fields, detail) => {
    refused(certificate({ tbs: fields }), detail);
  });

  it.each([
    ['wrong length', seq(seq(oid('1.2.840.10045.2.1'), oid('1.3.132.0.34')), bits(0x00, 0x04, 1, 2))],
    ['a P-256 key', Uint8Array.from(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' }))],
    ['a compressed point prefix', (() => {
      const k = PARTS.spki.slice();
      k[k.length - 97] = 0x02;
      return k;
    })()],
    ['a different curve OID, same length', (() => {
      const k = PARTS.spki.slice();
      k[k.length - 100] = k[k.length - 100]! ^ 0x01;
      return k;
    })()],
    // OpenSSL loads both of these: only the exact-prefix check refuses them.
    ['a hybrid-form P-384 point (0x06/0x07)', (() => {
      const k = Uint8Array.from(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'der' }));
      k[k.length - 97] = k[k.length - 1]! & 1 ? 0x07 : 0x06;
      return k;
    })()],
    // An Ed25519 key whose byte at the P-384 point offset happens to be 0x04.
    ['an Ed25519 key', hex('302a300506032b6570032100f03b6a65924875e05f6433040c32e75a96aed36b4e2be0a7ab30e9501ce24ac4')],
    ['a point off the curve', (() => {
      const k = PARTS.spki.slice();
      k[k.length - 1] = k[k.length - 1]! ^ 0x01;
      return k;
    })()],
  ])('refuses a public key that is not P-384: %s', (_name, spki) => {
    refused(certificate({ tbs: tbsFields({ spki }) }), /public key/);
  });

  it('accepts another valid P-384 key and returns it', () => {
    const spki = Uint8Array.from(generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ type: 'spki', format: 'der' }));
    const cert = parseCertificate(certificate({ tbs: tbsFields({ spki }) }), 'leaf');
    expect(Buffer.from(cert.publicKey.export({ type: 'spki', format: 'der' })).equals(Buffer.from(spki))).toBe(true);
  });
});

describe('parseCertificate reads extensions strictly', () => {
  const parse = (...list: Uint8Array[]): ParsedCertificate => parseCertificate(withExtensions(...list), 'leaf');

  it.each([
    ['empty', seq(), false, undefined],
    ['cA TRUE', seq(TRUE), true, undefined],
    ['cA TRUE, pathLen 0', seq(TRUE, int(0)), true, 0],
    ['cA TRUE, pathLen 3', seq(TRUE, int(3)), true, 3],
    ['cA TRUE, pathLen 200', seq(TRUE, int(0x00, 0xc8)), true, 200],
  ])('basicConstraints %s', (_name, value, isCA, pathLen) => {
    for (const critical of [undefined, TRUE]) {
      const cert = parse(extension(BASIC_CONSTRAINTS, value, critical));
      expect([cert.isCA, cert.pathLen]).toEqual([isCA, pathLen]);
    }
  });

  it.each([
    ['explicit cA FALSE', seq(FALSE), /explicit cA FALSE/],
    ['pathLen without cA', seq(int(1)), /pathLen without cA/],
    ['pathLen before cA', seq(int(1), TRUE), /unexpected content/],
    ['two pathLens', seq(TRUE, int(1), int(1)), /unexpected content/],
    ['an extra item', seq(TRUE, hex('0500')), /unexpected content/],
    ['trailing bytes', cat(seq(TRUE), hex('00')), /trailing bytes/],
    ['not a SEQUENCE', tlv(0x31, TRUE), /basicConstraints/],
    ['a negative pathLen', seq(TRUE, int(0xff)), /negative/],
  ])('refuses basicConstraints with %s', (_name, value, detail) => {
    refused(withExtensions(extension(BASIC_CONSTRAINTS, value)), detail);
  });

  it.each([
    ['digitalSignature', [0x07, 0x80], KeyUsage.digitalSignature],
    ['keyCertSign and cRLSign', [0x01, 0x06], KeyUsage.keyCertSign | (1 << 6)],
    ['keyCertSign only', [0x02, 0x04], KeyUsage.keyCertSign],
    ['every bit of the first byte', [0x00, 0xff], 0xff],
    ['bits past the unused count ignored', [0x07, 0xff], 1],
    ['nonRepudiation and keyEncipherment', [0x05, 0x60], 0b110],
    ['decipherOnly (second byte)', [0x07, 0x80, 0x80], 1 | (1 << 8)],
    ['sixteen bits', [0x00, 0x00, 0x81], (1 << 8) | (1 << 15)],
    ['no bits set', [0x00, 0x00], 0],
  ])('keyUsage %s', (_name, content, flags) => {
    expect(parse(extension(KEY_USAGE, bits(...content), TRUE)).keyUsage).toBe(flags);
  });

  it.each([
    ['no content byte', bits(), /invalid BIT STRING/],
    ['only the unused count', bits(0x00), /invalid BIT STRING/],
    ['eight unused bits', bits(0x08, 0x00), /invalid BIT STRING/],
    ['three bytes of bits', bits(0x00, 0x00, 0x00, 0x00), /invalid BIT STRING/],
    ['trailing bytes', cat(bits(0x07, 0x80), hex('00')), /trailing bytes/],
    ['an OCTET STRING', octets(hex('0780')), /keyUsage/],
  ])('refuses keyUsage with %s', (_name, value, detail) => {
    refused(withExtensions(extension(KEY_USAGE, value)), detail);
  });

  it('reads both extensions together, in either order', () => {
    const bc = extension(BASIC_CONSTRAINTS, seq(TRUE, int(1)), TRUE);
    const ku = extension(KEY_USAGE, bits(0x01, 0x06), TRUE);
    for (const list of [[bc, ku], [ku, bc]]) {
      const cert = parse(...list);
      expect([cert.isCA, cert.pathLen, cert.keyUsage]).toEqual([true, 1, 96]);
    }
  });

  it('ignores an unknown non-critical extension, explicit FALSE or absent', () => {
    const cert = parse(extension('2.5.29.14', octets(hex('0102'))), extension('2.5.29.35', seq(), FALSE), extension(KEY_USAGE, bits(0x07, 0x80)));
    expect(cert.keyUsage).toBe(1);
  });

  it('accepts an empty extension list', () => {
    expect(parse().isCA).toBe(false);
  });

  it.each([
    ['an unknown critical extension', [extension('2.5.29.14', octets(hex('01')), TRUE)], /unsupported critical extension 2\.5\.29\.14/],
    ['a duplicate extension', [extension(KEY_USAGE, bits(0x07, 0x80)), extension(KEY_USAGE, bits(0x07, 0x80))], /duplicate extension 2\.5\.29\.15/],
    ['a duplicate unknown extension', [extension('2.5.29.14', octets()), extension('2.5.29.14', octets())], /duplicate extension/],
    ['an extension that is not a SEQUENCE', [tlv(0x31, oid(KEY_USAGE), octets(bits(0x07, 0x80)))], /must be a SEQUENCE/],
    ['an extension without OID', [seq(octets(bits(0x07, 0x80)))], /without OID/],
    ['an empty extension', [seq()], /without OID/],
    ['a critical flag and no value', [seq(oid(KEY_USAGE), TRUE)], /value must be an OCTET STRING|unexpected content/],
    ['a critical flag and two values', [seq(oid(KEY_USAGE), TRUE, octets(bits(0x07, 0x80)), octets())], /unexpected content/],
    ['no value', [seq(oid(KEY_USAGE))], /unexpected content/],
    ['two values', [seq(oid(KEY_USAGE), octets(bits(0x07, 0x80)), octets())], /unexpected content/],
    ['a value that is not an OCTET STRING', [seq(oid(KEY_USAGE), bits(0x07, 0x80))], /value must be an OCTET STRING/],
    ['a critical value that is not an OCTET STRING', [seq(oid(KEY_USAGE), TRUE, bits(0x07, 0x80))], /value must be an OCTET STRING/],
    ['a malformed critical flag', [seq(oid(KEY_USAGE), hex('010101'), octets(bits(0x07, 0x80)))], /BOOLEAN/],
  ])('refuses %s', (_name, list, detail) => {
    refused(withExtensions(...list), detail);
  });

  it.each([
    ['content that is not a SEQUENCE', tlv(0xa3, tlv(0x31)), /extensions: expected tag/],
    ['trailing bytes after the list', tlv(0xa3, seq(), hex('0500')), /extensions: trailing bytes/],
    ['an empty wrapper', tlv(0xa3), /truncated DER element/],
  ])('refuses an extensions block with %s', (_name, wrapper, detail) => {
    refused(certificate({ tbs: tbsFields({}, wrapper) }), detail);
  });
});
