/**
 * The COSE signature (raw r || s) is handed to OpenSSL as DER (issue 15, goal 2: node's ieee-p1363 path
 * downgrades every fresh leaf key to a legacy EC_KEY). The conversion must be exactly the canonical DER
 * OpenSSL itself produces, so the verdict cannot change: checked byte for byte against OpenSSL's own DER.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

  it('P-521 (66-byte halves, 132 bytes): exactly the DER OpenSSL signed, in the long length form', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-521' });
    const heads = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const message = randomBytes(32);
      const der = sign('sha512', message, { key: privateKey, dsaEncoding: 'der' });
      const raw = derToRaw(der, 66);
      expect(raw.length).toBe(132);
      expect(Buffer.from(rawSignatureToDer(raw)).equals(der)).toBe(true);
      expect(verify('sha512', message, { key: publicKey, dsaEncoding: 'der' }, rawSignatureToDer(raw))).toBe(true);
      heads.add(der.subarray(0, 2).toString('hex'));
    }
    expect(heads.has('3081')).toBe(true);
  });
});

describe('rawSignatureToDer against OpenSSL\'s DER encoder (asn1parse -genconf) on chosen r and s', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-der-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  /** SEQUENCE { INTEGER r, INTEGER s } as OpenSSL encodes it. */
  function opensslDer(r: Uint8Array, s: Uint8Array): Buffer {
    const int = (b: Uint8Array): string => `INTEGER:0x${Buffer.from(b).toString('hex') || '00'}`;
    writeFileSync(join(dir, 'sig.cnf'), `asn1 = SEQUENCE:sig\n[sig]\nr = ${int(r)}\ns = ${int(s)}\n`);
    const run = spawnSync('openssl', ['asn1parse', '-genconf', join(dir, 'sig.cnf'), '-out', join(dir, 'sig.der'), '-noout']);
    if (run.error) throw new Error(`openssl is needed for this cross-check: ${run.error.message}`);
    expect(run.status, run.stderr.toString()).toBe(0);
    return readFileSync(join(dir, 'sig.der'));
  }
  const bytes = (...parts: (number | readonly number[])[]): Uint8Array => Uint8Array.from(parts.flatMap((p) => (typeof p === 'number' ? [p] : [...p])));
  const fill = (n: number, byte: number): number[] => new Array<number>(n).fill(byte);

  it.each([
    // [name, r, s, expected head]
    ['both zero (48)', fill(48, 0), fill(48, 0), '3006'],
    ['one-byte halves', [0x00], [0xff], '3007'],
    ['top bit set in both (48)', fill(48, 0xff), fill(48, 0x80), '3066'],
    ['top bit set after leading zeros', [...fill(47, 0), 0x80], [0x00, 0x00, 0x80, ...fill(45, 0x01)], '3035'],
    ['leading zeros, top bit clear', [...fill(10, 0), 0x7f, ...fill(37, 0x11)], [0x00, 0x01, ...fill(46, 0x00)], '3059'],
    ['P-256 halves (32)', [0x80, ...fill(31, 0x01)], [0x01, ...fill(31, 0x80)], '3045'],
    // P-521: r is 68 bytes of DER; 59 or 60 more make a 127-byte (short form) or 128-byte (long form) SEQUENCE.
    ['127 bytes: the longest short form', [0x01, ...fill(65, 0xff)], [...fill(9, 0), 0x01, ...fill(56, 0xab)], '307f'],
    ['128 bytes: the shortest long form', [0x01, ...fill(65, 0xff)], [...fill(8, 0), 0x01, ...fill(57, 0xab)], '308180'],
    ['P-521 with both pads', fill(66, 0xff), fill(66, 0xff), '30818a'],
  ])('%s', (_name, r, s, head) => {
    const der = Buffer.from(rawSignatureToDer(bytes(r, s)));
    expect(der.equals(opensslDer(Uint8Array.from(r), Uint8Array.from(s)))).toBe(true);
    expect(der.subarray(0, head.length / 2).toString('hex')).toBe(head);
  });

  it('accepts every even length up to 132 bytes and refuses any other', () => {
    for (let n = 0; n <= 140; n++) {
      const raw = new Uint8Array(n).fill(0x42);
      if (n > 0 && n % 2 === 0 && n <= 132) expect(readTlv(rawSignatureToDer(raw), 0).content.length).toBe(2 * (2 + n / 2));
      else expect(() => rawSignatureToDer(raw), `length ${n}`).toThrow(RangeError);
    }
  });
});

