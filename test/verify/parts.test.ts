// The verifier's small parts: strict hex, byte comparison, the LRU behind
// its caches, and the error vocabulary callers branch on.
import { describe, expect, it } from 'vitest';
import { bytesEqual, fromHex, isAllZero, toHex } from '../../broker/verify/bytes.js';
import { ATTESTATION_ERROR_CODES, AttestationError, isAttestationError } from '../../broker/verify/errors.js';
import { Lru } from '../../broker/verify/lru.js';
import * as api from '../../broker/verify/index.js';

const u8 = (...b: number[]): Uint8Array => Uint8Array.from(b);

describe('bytes', () => {
  it('toHex reads exactly the view, lower case', () => {
    const buf = u8(0x00, 0xab, 0xcd, 0xef, 0x10);
    expect(toHex(buf)).toBe('00abcdef10');
    expect(toHex(buf.subarray(1, 3))).toBe('abcd');
    expect(toHex(new Uint8Array())).toBe('');
  });

  it.each([
    ['', ''],
    ['00', '00'],
    ['abCD09', 'abcd09'],
    ['FFff', 'ffff'],
  ])('fromHex(%j) decodes', (text, hex) => {
    const out = fromHex(text)!;
    expect(Object.getPrototypeOf(out)).toBe(Uint8Array.prototype);
    expect(toHex(out)).toBe(hex);
  });

  it.each(['0', 'abc', 'zz', '0g', 'g0', ' 00', '00 ', '0x00', '00\n', 'é0'])('fromHex(%j) refuses', (text) => {
    expect(fromHex(text)).toBeUndefined();
  });

  it('bytesEqual compares length and content', () => {
    expect(bytesEqual(u8(1, 2), u8(1, 2))).toBe(true);
    expect(bytesEqual(new Uint8Array(), new Uint8Array())).toBe(true);
    expect(bytesEqual(u8(1, 2), u8(1, 3))).toBe(false);
    expect(bytesEqual(u8(1, 2), u8(1, 2, 0))).toBe(false);
    expect(bytesEqual(u8(1, 2, 0), u8(1, 2))).toBe(false);
    expect(bytesEqual(u8(9, 1, 2).subarray(1), u8(1, 2))).toBe(true);
  });

  it('isAllZero', () => {
    expect(isAllZero(new Uint8Array(48))).toBe(true);
    expect(isAllZero(new Uint8Array())).toBe(true);
    const last = new Uint8Array(48);
    last[47] = 1;
    expect(isAllZero(last)).toBe(false);
    expect(isAllZero(u8(0x80, 0))).toBe(false);
  });
});

describe('Lru', () => {
  it.each([0, -1, 1.5, Number.NaN])('refuses size %d', (size) => {
    expect(() => new Lru(size)).toThrow(RangeError);
  });

  it('keeps at most max entries, evicting the least recently used', () => {
    const lru = new Lru<string, number>(2);
    lru.set('a', 1);
    lru.set('b', 2);
    expect(lru.size).toBe(2);
    expect(lru.get('a')).toBe(1); // a is now the most recent
    lru.set('c', 3); // evicts b
    expect(lru.size).toBe(2);
    expect(lru.get('b')).toBeUndefined();
    expect([lru.get('a'), lru.get('c')]).toEqual([1, 3]);
    lru.set('a', 10); // replaces, refreshes a; c is now the oldest
    expect(lru.size).toBe(2);
    lru.set('d', 4);
    expect([lru.get('a'), lru.get('c'), lru.get('d')]).toEqual([10, undefined, 4]);
    lru.clear();
    expect(lru.size).toBe(0);
    expect(lru.get('a')).toBeUndefined();
  });

  it('a size-1 cache keeps only the last entry', () => {
    const lru = new Lru<number, string>(1);
    lru.set(1, 'x');
    lru.set(2, 'y');
    expect([lru.get(1), lru.get(2), lru.size]).toEqual([undefined, 'y', 1]);
  });

  it('a miss does not disturb the order', () => {
    const lru = new Lru<string, number>(2);
    lru.set('a', 1);
    lru.set('b', 2);
    expect(lru.get('zz')).toBeUndefined();
    lru.set('c', 3);
    expect([lru.get('a'), lru.get('b'), lru.get('c')]).toEqual([undefined, 2, 3]);
  });
});

describe('errors', () => {
  it('publishes the stable codes, in order', () => {
    expect(ATTESTATION_ERROR_CODES).toEqual([
      'MALFORMED_COSE',
      'UNSUPPORTED_ALG',
      'MALFORMED_PAYLOAD',
      'CERT_CHAIN_INVALID',
      'UNTRUSTED_ROOT',
      'CERT_EXPIRED',
      'BAD_SIGNATURE',
      'DOC_EXPIRED',
      'NONCE_MISMATCH',
      'PCR_MISMATCH',
      'DEBUG_MODE',
    ]);
  });

  it('AttestationError carries its code, name and cause', () => {
    const cause = new Error('low');
    const err = new AttestationError('BAD_SIGNATURE', 'no', { cause });
    expect([err.code, err.name, err.message, err.cause]).toEqual(['BAD_SIGNATURE', 'AttestationError', 'no', cause]);
  });

  it('isAttestationError recognises this class and look-alike copies with a known code only', () => {
    expect(isAttestationError(new AttestationError('PCR_MISMATCH', 'x'))).toBe(true);
    const copy = Object.assign(new Error('x'), { name: 'AttestationError', code: 'DOC_EXPIRED' });
    expect(isAttestationError(copy)).toBe(true);
    for (const code of ATTESTATION_ERROR_CODES) expect(isAttestationError(Object.assign(new Error('x'), { name: 'AttestationError', code }))).toBe(true);
    expect(isAttestationError(Object.assign(new Error('x'), { name: 'AttestationError', code: 'SOMETHING_ELSE' }))).toBe(false);
    expect(isAttestationError(Object.assign(new Error('x'), { name: 'AttestationError', code: 7 }))).toBe(false);
    expect(isAttestationError(Object.assign(new Error('x'), { name: 'AttestationError' }))).toBe(false);
    expect(isAttestationError(Object.assign(new Error('x'), { name: 'TypeError', code: 'DOC_EXPIRED' }))).toBe(false);
    expect(isAttestationError({ name: 'AttestationError', code: 'DOC_EXPIRED', message: 'x' })).toBe(false);
    expect(isAttestationError(null)).toBe(false);
    expect(isAttestationError('AttestationError')).toBe(false);
  });

  it('the package entry point exports the public verifier surface', () => {
    expect(Object.keys(api).sort()).toEqual([
      'ATTESTATION_ERROR_CODES',
      'AWS_NITRO_ROOT_G1_DER',
      'AWS_NITRO_ROOT_G1_PEM',
      'AWS_NITRO_ROOT_G1_SHA256',
      'AttestationError',
      'createVerifier',
      'isAttestationError',
      'pemCertificates',
      'verifyAttestation',
    ]);
    expect(api.AWS_NITRO_ROOT_G1_SHA256).toBe('641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b');
  });
});
