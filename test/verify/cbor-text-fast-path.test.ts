/**
 * Issue 15: the strict CBOR pass checks an all-ASCII text string without a TextDecoder call, and builds the identity
 * of a short text map key without a Buffer. Differential, over random bytes: a text string is accepted exactly when
 * it is valid UTF-8 (as the fatal TextDecoder says), and two text keys of a map are duplicates exactly when their
 * texts, as that decoder reads them (one leading byte-order mark dropped), are equal, at every length around the
 * short-key bound.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { CborShapeError, assertSingleItem } from '../../broker/verify/cbor-strict.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

function textItem(content: Uint8Array): Uint8Array {
  const n = content.length;
  const head = n < 24 ? [0x60 | n] : n < 0x100 ? [0x78, n] : [0x79, n >> 8, n & 0xff];
  return Uint8Array.from([...head, ...content]);
}

function verdict(bytes: Uint8Array): 'ok' | 'shape' {
  try {
    assertSingleItem(bytes);
    return 'ok';
  } catch (err) {
    if (err instanceof CborShapeError) return 'shape';
    throw err;
  }
}

const decodedOrNull = (b: Uint8Array): string | null => {
  try {
    return utf8.decode(b);
  } catch {
    return null;
  }
};

// Mostly ASCII, sometimes a multi-byte sequence, a BOM or a stray byte.
const textBytes = fc
  .array(fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 0x7f }).map((b) => [b]) }, fc.constant([0xef, 0xbb, 0xbf]), fc.constant([0xc3, 0xa9]), fc.integer({ min: 0x80, max: 0xff }).map((b) => [b])), { maxLength: 40 })
  .map((parts) => Uint8Array.from(parts.flat()));

describe('strict CBOR text: the ASCII and short-key fast paths', () => {
  it('accepts a text string exactly when it is valid UTF-8', () => {
    fc.assert(
      fc.property(textBytes, (content) => {
        expect(verdict(textItem(content))).toBe(decodedOrNull(content) === null ? 'shape' : 'ok');
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses two text keys as duplicates exactly when the decoder reads them as the same text', () => {
    fc.assert(
      fc.property(textBytes, fc.oneof(textBytes, fc.constant(null)), (a, bOrNull) => {
        // Often the same bytes, or the same text with a leading BOM added.
        const b = bOrNull ?? Uint8Array.from([0xef, 0xbb, 0xbf, ...a]);
        const map = Uint8Array.from([0xa2, ...textItem(a), 0x00, ...textItem(b), 0x00]);
        const ta = decodedOrNull(a);
        const tb = decodedOrNull(b);
        const expected = ta === null || tb === null || ta === tb ? 'shape' : 'ok';
        expect(verdict(map)).toBe(expected);
      }),
      { numRuns: 3000 },
    );
  });

  it('keys at the short-key bound and past it: equal keys are duplicates, keys differing in the last byte are not', () => {
    for (let n = 20; n <= 30; n++) {
      const a = new Uint8Array(n).fill(0x61);
      const b = Uint8Array.from(a);
      b[n - 1] = 0x62;
      const latinA = Uint8Array.from([...a.subarray(1), 0xc3, 0xa9]);
      expect(verdict(Uint8Array.from([0xa2, ...textItem(a), 0x00, ...textItem(a), 0x00]))).toBe('shape');
      expect(verdict(Uint8Array.from([0xa2, ...textItem(a), 0x00, ...textItem(b), 0x00]))).toBe('ok');
      expect(verdict(Uint8Array.from([0xa2, ...textItem(latinA), 0x00, ...textItem(latinA), 0x00]))).toBe('shape');
      expect(verdict(Uint8Array.from([0xa2, ...textItem(latinA), 0x00, ...textItem(a), 0x00]))).toBe('ok');
    }
  });
});
