// The strict CBOR pass rule by rule, with the edges the attestation format
// relies on: header sizes, what counts as a duplicate key, which simple
// values exist, strings that end exactly at the data's end; and the decoder
// behind it (maps stay Maps, byte strings are copies).
import { describe, expect, it } from 'vitest';
import { decodeStrict } from '../../broker/verify/cbor-decode.js';
import { CborShapeError, Major, assertSingleItem, itemEnd, readHead } from '../../broker/verify/cbor-strict.js';

const buf = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex.replace(/\s/g, ''), 'hex'));

function refusal(hex: string): CborShapeError {
  try {
    assertSingleItem(buf(hex));
  } catch (err) {
    expect(err).toBeInstanceOf(CborShapeError);
    expect((err as CborShapeError).code).toBe('CBOR_MALFORMED');
    expect((err as CborShapeError).name).toBe('CborShapeError');
    return err as CborShapeError;
  }
  return expect.unreachable('accepted');
}

describe('readHead', () => {
  it.each([
    ['00', Major.Uint, 0, 1],
    ['17', Major.Uint, 23, 1],
    ['1818', Major.Uint, 24, 2],
    ['18ff', Major.Uint, 255, 2],
    ['190100', Major.Uint, 256, 3],
    ['1a00010000', Major.Uint, 65_536, 5],
    ['1b0000000100000000', Major.Uint, 2 ** 32, 9],
    ['20', Major.NegInt, 0, 1],
    ['3818', Major.NegInt, 24, 2],
    ['43', Major.Bytes, 3, 1],
    ['78ff', Major.Text, 255, 2],
    ['84', Major.Array, 4, 1],
    ['a1', Major.Map, 1, 1],
    ['d2', Major.Tag, 18, 1],
    ['f6', Major.Simple, 22, 1],
    ['f818', Major.Simple, 24, 2],
  ])('%s -> major %d, argument %d, %d byte(s)', (hex, major, argument, end) => {
    expect(readHead(buf(hex), 0)).toEqual({ major, argument, indefinite: false, end });
  });

  it('reads at an offset', () => {
    expect(readHead(buf('00 1901f4'), 1)).toEqual({ major: Major.Uint, argument: 500, indefinite: false, end: 4 });
  });

  it.each(['5f', '7f', '9f', 'bf', 'ff'])('%s is indefinite', (hex) => {
    expect(readHead(buf(hex), 0)).toEqual({ major: Number.parseInt(hex, 16) >> 5, argument: -1, indefinite: true, end: 1 });
  });

  it.each(['1c', '1d', '1e', '3c', '5d', 'fc', 'fe'])('refuses reserved additional information in %s', (hex) => {
    expect(() => readHead(buf(hex), 0)).toThrow(/reserved additional information/);
  });

  it.each(['', '18', '1900', '1a000000', '1b00000000000000'])('refuses a truncated header %j', (hex) => {
    expect(() => readHead(buf(hex), 0)).toThrow(/unexpected end of CBOR data/);
  });

  it('refuses reading past the end', () => {
    expect(() => readHead(buf('00'), 1)).toThrow(CborShapeError);
  });
});

describe('assertSingleItem', () => {
  it.each([
    ['two distinct negative keys', 'a2 20 00 21 00'],
    ['0 and -1 as keys', 'a2 00 00 20 00'],
    ['two distinct byte-string keys', 'a2 4101 00 4102 00'],
    ['a text and a byte-string key with the same content', 'a2 6161 00 4161 00'],
    ['two distinct text keys', 'a2 6161 00 6162 00'],
    ['two distinct array keys', 'a2 8100 00 8101 00'],
    ['an array with repeated items', '83 01 01 01'],
    ['an array of two equal items', '82 6161 6161'],
    ['invalid UTF-8 in a byte string', '42 c328'],
    ['a string ending exactly at the end', '43 010203'],
    ['false, true and null', '83 f4 f5 f6'],
    ['nested indefinite containers', '9f bf 6161 9f 01 ff ff ff'],
    ['an empty indefinite map', 'bf ff'],
    ['a negative integer', '3818'],
  ])('accepts %s', (_name, hex) => {
    expect(() => assertSingleItem(buf(hex))).not.toThrow();
  });

  it.each([
    ['a string one byte short', '43 0102', /string runs past the end/],
    ['an indefinite negative integer', '3f', /invalid integer encoding/],
    ['simple 20 in two bytes', 'f8 14', /non-minimal simple value/],
    ['simple 21 in two bytes', 'f8 15', /non-minimal simple value/],
    ['simple 22 in two bytes', 'f8 16', /non-minimal simple value/],
    ['simple 19', 'f3', /unsupported simple or float value/],
    ['simple 23 (undefined)', 'f7', /unsupported simple or float value/],
    ['a float32', 'fa 3f800000', /unsupported simple or float value/],
    ['a break outside any container', 'ff', /unexpected break/],
    ['a break inside a definite array', '82 01 ff', /unexpected break/],
    ['a map key without a value in an indefinite map', 'bf 6161 ff', /unexpected break/],
    ['a tag inside a map', 'a1 01 c1 00', /unexpected tag 1/],
    ['a container count beyond the data', '98 ff 01', /container length 255 exceeds the data/],
    ['a string length beyond the data', '58 ff 01', /string length 255 exceeds the data/],
    ['a duplicate negative key', 'a2 20 00 20 01', /duplicate map key at offset 3/],
    ['a duplicate byte-string key', 'a2 4101 00 4101 00', /duplicate map key/],
    ['a duplicate text key, one with a non-minimal length', 'a2 6161 00 780161 01', /duplicate map key at offset 4/],
    ['an unterminated indefinite array', '9f 01', /indefinite-length container is not terminated/],
    ['an unterminated indefinite map', 'bf 6161 00', /indefinite-length container is not terminated/],
    ['a duplicate array key', 'a2 8100 00 8100 00', /duplicate map key/],
    ['a duplicate text key in a nested map', 'a1 00 a2 6161 00 6161 00', /duplicate map key/],
    ['a second item', '00 00', /1 trailing byte\(s\) after the CBOR item/],
    ['three trailing bytes', 'a0 000000', /3 trailing byte\(s\)/],
    ['invalid UTF-8 in a text key', 'a1 62c328 00', /invalid UTF-8 in text string at offset 1/],
  ])('refuses %s', (_name, hex, detail) => {
    expect(refusal(hex).message).toMatch(detail);
  });

  it('keeps the UTF-8 error as the cause', () => {
    expect(refusal('62 c328').cause).toBeInstanceOf(Error);
  });

  it('nests 16 deep inside maps too, not 17', () => {
    expect(() => assertSingleItem(buf(`${'a101'.repeat(16)}00`))).not.toThrow();
    expect(refusal(`${'a101'.repeat(17)}00`).message).toMatch(/nesting deeper than 16/);
    expect(refusal(`${'9f'.repeat(17)}00${'ff'.repeat(17)}`).message).toMatch(/nesting deeper than 16/);
  });

  it('checks only the given range', () => {
    const data = buf('ff a0 ff');
    expect(() => assertSingleItem(data, 1, 2)).not.toThrow();
    expect(() => assertSingleItem(buf('ff a0'), 1)).not.toThrow();
    expect(() => assertSingleItem(data, 1)).toThrow(/1 trailing byte/);
    expect(() => assertSingleItem(data, 0, 2)).toThrow(/unexpected break/);
  });
});

describe('itemEnd', () => {
  it('measures each item of a sequence', () => {
    const data = buf('83 01 02 03  a1 6161 f6  5f 41 00 ff');
    expect(itemEnd(data, 0)).toBe(4);
    expect(itemEnd(data, 4)).toBe(8);
    expect(() => itemEnd(data, 8)).toThrow(/indefinite-length string/);
    expect(itemEnd(buf('bf 01 02 ff 00'), 0)).toBe(4);
    expect(itemEnd(buf('9f 01 9f ff ff'), 0)).toBe(5);
  });
});

describe('decodeStrict', () => {
  it('keeps maps as Maps with their key types, and copies byte strings', () => {
    const data = buf('a2 01 43 0a0b0c 6161 20');
    const decoded = decodeStrict(data) as Map<unknown, unknown>;
    expect(decoded).toBeInstanceOf(Map);
    expect([...decoded.keys()]).toEqual([1, 'a']);
    const bytes = decoded.get(1) as Uint8Array;
    expect(Buffer.from(bytes).toString('hex')).toBe('0a0b0c');
    data.fill(0);
    expect(Buffer.from(bytes).toString('hex')).toBe('0a0b0c');
    expect(decoded.get('a')).toBe(-1);
  });

  it('refuses through the strict pass first', () => {
    expect(() => decodeStrict(buf('a2 01 00 01 00'))).toThrow(CborShapeError);
    expect(() => decodeStrict(buf('00 00'))).toThrow(CborShapeError);
  });
});
