// The DER reader at its edges: exact TLV spans, length forms at their
// limits, containers that end exactly where they may, OID first-arc rules,
// BOOLEAN and INTEGER strictness, and every calendar field of a time.
import { describe, expect, it } from 'vitest';
import { DerError, Tag, children, expectTlv, oidToString, readBoolean, readSmallUint, readTime, readTlv } from '../../broker/verify/der.js';

const buf = (hex: string): Uint8Array => Uint8Array.from(Buffer.from(hex.replace(/\s/g, ''), 'hex'));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function derError(fn: () => unknown, detail: RegExp): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(DerError);
    expect((err as DerError).code).toBe('DER_MALFORMED');
    expect((err as DerError).name).toBe('DerError');
    expect((err as DerError).message).toMatch(detail);
    return;
  }
  expect.unreachable('accepted');
}

describe('readTlv', () => {
  it('returns the exact spans of an element at an offset', () => {
    const data = buf('ff ff 04 03 0a0b0c ee');
    const tlv = readTlv(data, 2);
    expect([tlv.tag, tlv.start, tlv.contentStart, tlv.end]).toEqual([0x04, 2, 4, 7]);
    expect([hex(tlv.content), hex(tlv.raw)]).toEqual(['0a0b0c', '04030a0b0c']);
  });

  it('reads an empty element of two bytes', () => {
    const tlv = readTlv(buf('0500'), 0);
    expect([tlv.end, tlv.content.length]).toEqual([2, 0]);
  });

  it('reads 128 as the smallest long-form length', () => {
    expect(readTlv(Uint8Array.from([0x04, 0x81, 0x80, ...new Array<number>(128).fill(9)]), 0).content.length).toBe(128);
  });

  it('reads long lengths of one, two and three bytes', () => {
    const one = readTlv(Uint8Array.from([0x04, 0x81, 0xff, ...new Array<number>(255).fill(1)]), 0);
    expect([one.contentStart, one.end]).toEqual([3, 258]);
    const two = readTlv(Uint8Array.from([0x04, 0x82, 0x01, 0x00, ...new Array<number>(256).fill(1)]), 0);
    expect([two.contentStart, two.end]).toEqual([4, 260]);
    const three = new Uint8Array(5 + 65_536);
    three.set([0x04, 0x83, 0x01, 0x00, 0x00]);
    expect(readTlv(three, 0).end).toBe(three.length);
  });

  it('accepts an element ending exactly at its limit, refuses one byte past it', () => {
    const data = buf('04 02 0102 00');
    expect(readTlv(data, 0, 4).end).toBe(4);
    derError(() => readTlv(data, 0, 3), /runs past its container/);
    derError(() => readTlv(buf('04 81 80'), 0, 2), /truncated DER length/);
    derError(() => readTlv(buf('0400'), 0, 1), /truncated DER element/);
    derError(() => readTlv(buf('0400'), 1), /truncated DER element/);
  });

  it.each([
    ['indefinite length', '30 80 0000', /indefinite length/],
    ['four length bytes', '04 84 00000001 00', /DER length too large/],
    ['a long form for a short length', '04 81 7f', /non-minimal DER length/],
    ['a leading zero length byte', '04 82 00ff', /non-minimal DER length/],
    ['high tag number form', '1f 01 00', /high-tag-number/],
    ['high tag number form, constructed', 'bf 01 00', /high-tag-number/],
  ])('refuses %s', (_name, data, detail) => {
    derError(() => readTlv(buf(data), 0), detail);
  });

  it('accepts tag number 30', () => {
    expect(readTlv(buf('1e 00'), 0).tag).toBe(0x1e);
  });
});

describe('expectTlv and children', () => {
  it('insists on the tag', () => {
    expect(expectTlv(buf('0201 05'), 0, Tag.Integer, 'n').content[0]).toBe(5);
    derError(() => expectTlv(buf('0201 05'), 0, Tag.Boolean, 'flag'), /^flag: expected tag 0x1, got 0x2$/);
    derError(() => expectTlv(buf('0201 05'), 0, Tag.Integer, 'n', 2), /runs past its container/);
  });

  it('lists the children of a constructed element, in order', () => {
    const seq = readTlv(buf('30 08 0201 01 0400 0101 ff'), 0);
    expect(children(seq).map((c) => [c.tag, hex(c.raw)])).toEqual([
      [0x02, '020101'],
      [0x04, '0400'],
      [0x01, '0101ff'],
    ]);
    expect(children(readTlv(buf('3000'), 0))).toEqual([]);
    derError(() => children(readTlv(buf('30 03 0202 01'), 0)), /runs past its container/);
  });

  it('names the universal tags', () => {
    expect(Tag).toEqual({ Boolean: 1, Integer: 2, BitString: 3, OctetString: 4, Null: 5, Oid: 6, UtcTime: 0x17, GeneralizedTime: 0x18, Sequence: 0x30, Set: 0x31 });
  });
});

describe('oidToString', () => {
  it.each([
    ['00', '0.0'],
    ['27', '0.39'],
    ['28', '1.0'],
    ['4f', '1.39'],
    ['50', '2.0'],
    ['7f', '2.47'],
    ['8137', '2.103'],
    ['883703', '2.999.3'],
    ['2a864886f70d', '1.2.840.113549'],
    ['2b0601040182370a0301', '1.3.6.1.4.1.311.10.3.1'],
    ['55 1d 0f', '2.5.29.15'],
    ['2a 8fffffffffffff7f', `1.2.${2 ** 53 - 1}`],
    ['2a 818000', '1.2.16384'],
  ])('%s -> %s', (content, dotted) => {
    expect(oidToString(buf(content))).toBe(dotted);
  });

  it.each([
    ['empty', '', /empty OID/],
    ['a non-minimal arc', '2a 80 01', /non-minimal OID arc/],
    ['a non-minimal first arc', '80 2a', /non-minimal OID arc/],
    ['a truncated last arc', '2a 86', /truncated OID/],
    ['an arc past 2^53', '2a ffffffffffffffff 7f', /OID arc too large/],
  ])('refuses %s', (_name, content, detail) => {
    derError(() => oidToString(buf(content)), detail);
  });
});

describe('readBoolean and readSmallUint', () => {
  it('reads DER booleans only', () => {
    expect(readBoolean(readTlv(buf('0101ff'), 0))).toBe(true);
    expect(readBoolean(readTlv(buf('010100'), 0))).toBe(false);
    derError(() => readBoolean(readTlv(buf('010101'), 0)), /0x00 or 0xFF/);
    derError(() => readBoolean(readTlv(buf('0100'), 0)), /invalid BOOLEAN/);
    derError(() => readBoolean(readTlv(buf('0102ffff'), 0)), /invalid BOOLEAN/);
    derError(() => readBoolean(readTlv(buf('0201ff'), 0)), /invalid BOOLEAN/);
  });

  it.each([
    ['020100', 0],
    ['02017f', 127],
    ['02020080', 128],
    ['02020100', 256],
    ['02047fffffff', 2 ** 31 - 1],
  ])('reads %s as %d', (data, value) => {
    expect(readSmallUint(readTlv(buf(data), 0))).toBe(value);
  });

  it.each([
    ['five bytes', '0205 0080000000', /invalid or oversized INTEGER/],
    ['empty', '0200', /invalid or oversized INTEGER/],
    ['not an INTEGER', '0401 01', /invalid or oversized INTEGER/],
    ['negative', '0201 80', /negative INTEGER/],
    ['negative, two bytes', '0202 ff00', /negative INTEGER/],
    ['a redundant leading zero', '0202 007f', /non-minimal INTEGER/],
    ['two leading zeros', '0203 000080', /non-minimal INTEGER/],
  ])('refuses %s', (_name, data, detail) => {
    derError(() => readSmallUint(readTlv(buf(data), 0)), detail);
  });
});

describe('readTime', () => {
  const utc = (s: string): number => readTime(readTlv(Uint8Array.from([Tag.UtcTime, s.length, ...Buffer.from(s)]), 0));
  const gen = (s: string): number => readTime(readTlv(Uint8Array.from([Tag.GeneralizedTime, s.length, ...Buffer.from(s)]), 0));

  it.each([
    ['491231235959Z', Date.UTC(2049, 11, 31, 23, 59, 59)],
    ['500101000000Z', Date.UTC(1950, 0, 1)],
    ['000229000000Z', Date.UTC(2000, 1, 29)],
    ['991231235959Z', Date.UTC(1999, 11, 31, 23, 59, 59)],
    ['260115120000Z', Date.UTC(2026, 0, 15, 12)],
  ])('UTCTime %s', (text, ms) => {
    expect(utc(text)).toBe(ms);
  });

  it.each([
    ['20500101000000Z', Date.UTC(2050, 0, 1)],
    ['19491231235959Z', Date.UTC(1949, 11, 31, 23, 59, 59)],
    ['99991231235959Z', Date.UTC(9999, 11, 31, 23, 59, 59)],
    ['20240229120000Z', Date.UTC(2024, 1, 29, 12)],
  ])('GeneralizedTime %s', (text, ms) => {
    expect(gen(text)).toBe(ms);
  });

  it.each([
    '260015120000Z', // month 0
    '261315120000Z', // month 13
    '260100120000Z', // day 0
    '260132120000Z', // day 32
    '260230120000Z', // 30 February
    '250229120000Z', // 29 February, not a leap year
    '260431120000Z', // 31 April
    '260115240000Z', // hour 24
    '260115126000Z', // minute 60
    '260115120060Z', // second 60
    '2601151200Z', // no seconds
    '260115120000', // no Z
    '260115120000+0000',
    '260115120000.5Z',
    'x260115120000Z',
    '260115120000Zx',
    '26011512000aZ',
  ])('refuses UTCTime %s', (text) => {
    expect(() => utc(text)).toThrow(DerError);
  });

  it.each(['20261315120000Z', '2026011512000Z', '260115120000Z', '20260115120000', 'x20260115120000Z', '20260115120000Zx'])('refuses GeneralizedTime %s', (text) => {
    expect(() => gen(text)).toThrow(DerError);
  });

  it('refuses another tag', () => {
    derError(() => readTime(readTlv(buf('04 0d 323630313135313230303030 5a'), 0)), /expected UTCTime or GeneralizedTime/);
  });
});
