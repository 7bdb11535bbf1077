/**
 * The COSE signature (raw r || s) is handed to OpenSSL as DER (issue 15, goal 2: node's ieee-p1363 path
 * downgrades every fresh leaf key to a legacy EC_KEY). The conversion must be exactly the canonical DER
 * OpenSSL itself produces, so the verdict cannot change: checked byte for byte against OpenSSL's own DER.
 */
import { describe, expect, it } from 'vitest';
import { generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { rawSignatureToDer } from '../../broker/verify/cose.js';
import { children, readTlv } from '../../broker/verify/der.js';

/** OpenSSL's DER ECDSA-Sig-Value -> raw r || s of `size`-byte integers (the inverse, for the comparison). */
function derToRaw(der: Uint8Array, size: number): Uint8Array {
  const [r, s] = children(readTlv(der, 0));
  const fixed = (content: Uint8Array): Uint8Array => {
    const body = content[0] === 0 ? content.subarray(1) : content;
    const out = new Uint8Array(size);
    out.set(body, size - body.length);
    return out;
  };
  return Buffer.concat([fixed(r!.content), fixed(s!.content)]);
}

describe('rawSignatureToDer', () => {
  it('gives back exactly the DER OpenSSL signed (P-384, 400 signatures: leading zeros and high bits included)', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    for (let i = 0; i < 400; i++) {
      const message = randomBytes(64);
      const der = sign('sha384', message, { key: privateKey, dsaEncoding: 'der' });
      const raw = derToRaw(der, 48);
      expect(Buffer.from(rawSignatureToDer(raw)).equals(der)).toBe(true);
      expect(verify('sha384', message, { key: publicKey, dsaEncoding: 'der' }, rawSignatureToDer(raw))).toBe(true);
    }
  });

  it('agrees with node\'s own ieee-p1363 verdict on valid and tampered signatures', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    for (let i = 0; i < 100; i++) {
      const message = randomBytes(32);
      const raw = sign('sha384', message, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      if (i % 2) raw[i % raw.length]! ^= 1 << (i % 8);
      const p1363 = verify('sha384', message, { key: publicKey, dsaEncoding: 'ieee-p1363' }, raw);
      expect(verify('sha384', message, { key: publicKey, dsaEncoding: 'der' }, rawSignatureToDer(raw))).toBe(p1363);
      expect(p1363).toBe(i % 2 === 0);
    }
  });

  it('encodes edge values minimally: zero, leading zeros, top bit set', () => {
    const r = new Uint8Array(48);
    const s = new Uint8Array(48).fill(0xff);
    expect([...rawSignatureToDer(Buffer.concat([r, s]))]).toEqual([0x30, 3 + 51, 0x02, 0x01, 0x00, 0x02, 49, 0x00, ...s]);
    const small = new Uint8Array(48);
    small[47] = 0x7f;
    expect([...rawSignatureToDer(Buffer.concat([small, small]))]).toEqual([0x30, 6, 0x02, 0x01, 0x7f, 0x02, 0x01, 0x7f]);
  });

  it('refuses a raw signature that is not r || s of equal halves', () => {
    expect(() => rawSignatureToDer(new Uint8Array(0))).toThrow(RangeError);
    expect(() => rawSignatureToDer(new Uint8Array(95))).toThrow(RangeError);
    expect(() => rawSignatureToDer(new Uint8Array(134))).toThrow(RangeError);
  });
});
