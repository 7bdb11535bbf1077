import { describe, expect, it } from 'vitest';
import { CborShapeError, assertSingleItem, itemEnd, readHead } from '../../broker/verify/cbor-strict.js';

const ok = (hex: string): void => assertSingleItem(Buffer.from(hex, 'hex'));
const bad = (hex: string): (() => void) => () => assertSingleItem(Buffer.from(hex, 'hex'));

describe('strict CBOR structural pass', () => {
  it('accepts the subset attestation documents use', () => {
    ok('a0'); // {}
    ok('bf6161f6ff'); // indefinite {"a": null}
    ok('a201382202f5'); // {1: -35, 2: true}
    ok('84434101024040f4'); // [h'410102', h'', h'', false]
    ok('1b0000018459a0b138'); // uint64
    ok('6161'); // "a"
  });

  it.each([
    ['trailing byte', 'a000'],
    ['duplicate int key', 'a201010102'],
    ['duplicate int key, non-minimal second', 'a201011801' + '02'],
    ['duplicate text key', 'a2616101616102'],
    ['duplicate key in indefinite map', 'bf6161016161' + '02ff'],
    ['duplicate byte-string key', 'a2410101410102'],
    ['reserved additional info', '1c'],
    ['break outside a container', 'ff'],
    ['indefinite byte string', '5f4101ff'],
    ['indefinite text string', '7f6161ff'],
    ['indefinite integer', '1f'],
    ['tag', 'c240'],
    ['float16', 'f93c00'],
    ['float64', 'fb3ff0000000000000'],
    ['undefined', 'f7'],
    ['simple value 16', 'f0'],
    ['two-byte simple value', 'f818'],
    ['invalid UTF-8', '62c328'],
    ['length past the end', '5a00000010' + '00'],
    ['huge 8-byte length', '5bffffffffffffffff'],
    ['huge array count', '9bffffffffffffffff'],
    ['unterminated indefinite array', '9f01'],
    ['empty input', ''],
  ])('rejects %s', (_name, hex) => {
    expect(bad(hex)).toThrow(CborShapeError);
  });

  it('limits nesting depth', () => {
    ok('81'.repeat(16) + '00');
    expect(bad('81'.repeat(17) + '00')).toThrow(CborShapeError);
  });

  it('measures items and reads heads', () => {
    const buf = Buffer.from('a0' + '4401020304', 'hex');
    expect(itemEnd(buf, 0)).toBe(1);
    expect(itemEnd(buf, 1)).toBe(6);
    expect(readHead(Buffer.from('1b001fffffffffffff', 'hex'), 0).argument).toBe(Number.MAX_SAFE_INTEGER);
    expect(readHead(Buffer.from('1b0020000000000000', 'hex'), 0).argument).toBe(2n ** 53n);
  });
});
