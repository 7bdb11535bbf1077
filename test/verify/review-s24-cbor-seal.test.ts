/** Review s24: strict CBOR text fast path / short keys; seal CEK+IV pool. */
import { describe, expect, it } from 'vitest';
import { generateKeyPairSync, privateDecrypt, constants } from 'node:crypto';
import fc from 'fast-check';
import * as strict from '../../broker/verify/cbor-strict.js';
import { encryptCompactRsaOaep256A256Gcm } from '../../broker/seal/compact.js';

const S = strict as unknown as Record<string, (b: Uint8Array) => unknown>;
const entry = 'assertSingleItem';

function head(major: number, n: number): number[] { return n < 24 ? [(major << 5) | n] : n < 256 ? [(major << 5) | 24, n] : [(major << 5) | 25, n >> 8, n & 255]; }
function text(bytes: Uint8Array): number[] { return [...head(3, bytes.length), ...bytes]; }
function map2(k1: Uint8Array, k2: Uint8Array): Uint8Array { return Uint8Array.from([0xa2, ...text(k1), 0x01, ...text(k2), 0x02]); }
const fatal = new TextDecoder('utf-8', { fatal: true });
function ref(k1: Uint8Array, k2: Uint8Array): 'ok' | 'bad' {
  let a: string, b: string;
  try { a = fatal.decode(k1); b = fatal.decode(k2); } catch { return 'bad'; }
  return a === b ? 'bad' : 'ok';
}
function got(buf: Uint8Array): 'ok' | 'bad' { try { S[entry!]!(buf); return 'ok'; } catch { return 'bad'; } }

describe('review: strict CBOR keys', () => {
  it('has a strict entry point', () => { expect(entry, Object.keys(S).join(',')).toBeDefined(); });
  it('two-key maps around the 24-byte bound: refused iff a key is invalid UTF-8 or the keys decode equal', () => {
    const byteArb = fc.oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.constantFrom(0x80, 0xbf, 0xc0, 0xc1, 0xc2, 0xe0, 0xed, 0xef, 0xbb, 0xf0, 0xf4, 0xf5, 0xff, 0x00));
    const keyArb = fc.uint8Array({ minLength: 0, maxLength: 30 }).chain(() => fc.array(byteArb, { minLength: 20, maxLength: 28 }).map((a) => Uint8Array.from(a)));
    fc.assert(fc.property(keyArb, fc.boolean(), fc.integer({ min: 0, max: 27 }), (k1, dup, flip) => {
      const k2 = Uint8Array.from(k1); if (!dup && k2.length) k2[flip % k2.length]! ^= 1;
      expect(got(map2(k1, k2))).toBe(ref(k1, k2));
    }), { numRuns: 3000 });
    const a23 = Buffer.alloc(23, 0x61), a24 = Buffer.alloc(24, 0x61), a25 = Buffer.alloc(25, 0x61);
    for (const [k1, k2] of [[a24, a24], [a25, a25], [a23, a24], [a24, a25], [Buffer.from('\uFEFF' + 'a'.repeat(24)), a24], [Buffer.from('\uFEFF' + 'a'.repeat(25)), a25], [Buffer.from([0xc0, 0x80]), Buffer.from([0])], [Buffer.from([0xe0, 0x80, 0x80]), Buffer.from('x')]] as const)
      expect(got(map2(k1, k2))).toBe(ref(k1, k2));
  });
});

describe('review: seal pool', () => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const small = generateKeyPairSync('rsa', { modulusLength: 512 }).publicKey; // OAEP-SHA256 cannot wrap 32 bytes: throws mid-seal, after the draw
  const header = { alg: 'RSA-OAEP-256', enc: 'A256GCM' } as const;
  it('CEKs and IVs unique and non-zero across refills, with seals that throw mid-way interleaved', () => {
    const ceks = new Set<string>(); const ivs = new Set<string>(); let threw = 0;
    for (let i = 0; i < 300; i++) {
      if (i % 7 === 3) { try { encryptCompactRsaOaep256A256Gcm(header, Buffer.from('x'), small); } catch { threw++; } }
      const jwe = encryptCompactRsaOaep256A256Gcm(header, Buffer.from('secret'), publicKey).split('.');
      const cek = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, Buffer.from(jwe[1]!, 'base64url'));
      const iv = Buffer.from(jwe[2]!, 'base64url');
      expect(cek.length).toBe(32); expect(iv.length).toBe(12);
      expect(cek.equals(Buffer.alloc(32))).toBe(false); expect(iv.equals(Buffer.alloc(12))).toBe(false);
      ceks.add(cek.toString('hex')); ivs.add(iv.toString('hex'));
    }
    expect(threw).toBeGreaterThan(30);
    expect(ceks.size).toBe(300); expect(ivs.size).toBe(300);
  });
  it('a plaintext that throws in the middle (getter-free: a detached-like bad input) leaves the pool consistent', () => {
    expect(() => encryptCompactRsaOaep256A256Gcm(header, ({}) as unknown as Uint8Array, publicKey)).toThrow();
    const a = encryptCompactRsaOaep256A256Gcm(header, Buffer.from('a'), publicKey).split('.')[2];
    const b = encryptCompactRsaOaep256A256Gcm(header, Buffer.from('a'), publicKey).split('.')[2];
    expect(a).not.toBe(b);
  });
});
