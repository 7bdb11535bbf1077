/**
 * A minimal, strict DER reader: just enough to take an X.509 certificate
 * apart into the fields chain validation needs, with exact byte spans (the
 * signature covers the original TBSCertificate bytes). General ASN.1
 * libraries parse every field into objects, which costs as much as a P-384
 * verify per certificate; this reads a leaf in microseconds.
 */
import { CodedError } from '../../lib/coded-error.js';

/** Thrown for any encoding DER does not allow; callers translate it. */
export class DerError extends CodedError<'DER_MALFORMED'> {
  override readonly name = 'DerError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('DER_MALFORMED', message, options);
  }
}

/** Universal tags used in certificates. */
export const Tag = {
  Boolean: 0x01,
  Integer: 0x02,
  BitString: 0x03,
  OctetString: 0x04,
  Null: 0x05,
  Oid: 0x06,
  UtcTime: 0x17,
  GeneralizedTime: 0x18,
  Sequence: 0x30,
  Set: 0x31,
} as const;

/** One TLV: `start` is the tag byte, `content` the value bytes, `end` just past it. */
export interface Tlv {
  readonly tag: number;
  readonly start: number;
  readonly contentStart: number;
  readonly end: number;
  readonly content: Uint8Array;
  /** The whole TLV, tag and length included. */
  readonly raw: Uint8Array;
}

/** Reads the TLV at `pos` within `buf[..limit)`. */
export function readTlv(buf: Uint8Array, pos: number, limit = buf.length): Tlv {
  if (pos + 2 > limit) throw new DerError('truncated DER element');
  const tag = buf[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError('high-tag-number form is not used in certificates');
  let len = buf[pos + 1]!;
  let contentStart = pos + 2;
  if (len & 0x80) {
    const count = len & 0x7f;
    if (count === 0) throw new DerError('indefinite length is not DER');
    if (count > 3) throw new DerError('DER length too large');
    if (contentStart + count > limit) throw new DerError('truncated DER length');
    len = 0;
    for (let i = 0; i < count; i++) len = (len << 8) | buf[contentStart + i]!;
    if (buf[contentStart] === 0 || len < 0x80) throw new DerError('non-minimal DER length');
    contentStart += count;
  }
  const end = contentStart + len;
  if (end > limit) throw new DerError('DER element runs past its container');
  return { tag, start: pos, contentStart, end, content: buf.subarray(contentStart, end), raw: buf.subarray(pos, end) };
}

/** Reads a TLV and insists on its tag. */
export function expectTlv(buf: Uint8Array, pos: number, tag: number, what: string, limit = buf.length): Tlv {
  const tlv = readTlv(buf, pos, limit);
  if (tlv.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, got 0x${tlv.tag.toString(16)}`);
  return tlv;
}

/** The children of a constructed element, in order. */
export function children(parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  const buf = parent.content;
  let pos = 0;
  while (pos < buf.length) {
    const child = readTlv(buf, pos);
    out.push(child);
    pos = child.end;
  }
  return out;
}

/** Dotted-decimal form of an OBJECT IDENTIFIER's content bytes. */
export function oidToString(content: Uint8Array): string {
  if (content.length === 0) throw new DerError('empty OID');
  const arcs: number[] = [];
  let value = 0;
  for (let i = 0; i < content.length; i++) {
    const byte = content[i]!;
    if (value === 0 && byte === 0x80) throw new DerError('non-minimal OID arc');
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER) throw new DerError('OID arc too large');
    if ((byte & 0x80) === 0) {
      if (arcs.length === 0) {
        const first = value < 80 ? Math.floor(value / 40) : 2;
        arcs.push(first, value - first * 40);
      } else {
        arcs.push(value);
      }
      value = 0;
    } else if (i === content.length - 1) {
      throw new DerError('truncated OID');
    }
  }
  return arcs.join('.');
}

/** DER BOOLEAN content: exactly one byte, 0x00 or 0xFF. */
export function readBoolean(tlv: Tlv): boolean {
  if (tlv.tag !== Tag.Boolean || tlv.content.length !== 1) throw new DerError('invalid BOOLEAN');
  const b = tlv.content[0];
  if (b === 0xff) return true;
  if (b === 0x00) return false;
  throw new DerError('BOOLEAN must be 0x00 or 0xFF in DER');
}

/** A small non-negative INTEGER (path lengths, versions). */
export function readSmallUint(tlv: Tlv): number {
  const c = tlv.content;
  if (tlv.tag !== Tag.Integer || c.length === 0 || c.length > 4) throw new DerError('invalid or oversized INTEGER');
  if (c[0]! & 0x80) throw new DerError('negative INTEGER where a count is expected');
  if (c.length > 1 && c[0] === 0 && (c[1]! & 0x80) === 0) throw new DerError('non-minimal INTEGER');
  let v = 0;
  for (const b of c) v = v * 256 + b;
  return v;
}

/** UTCTime or GeneralizedTime in the strict RFC 5280 forms, as epoch milliseconds. */
export function readTime(tlv: Tlv): number {
  const text = String.fromCharCode(...tlv.content);
  let match: RegExpExecArray | null;
  let year: number;
  if (tlv.tag === Tag.UtcTime) {
    match = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (!match) throw new DerError(`invalid UTCTime "${text}"`);
    const yy = Number(match[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (tlv.tag === Tag.GeneralizedTime) {
    match = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (!match) throw new DerError(`invalid GeneralizedTime "${text}"`);
    year = Number(match[1]);
  } else {
    throw new DerError('expected UTCTime or GeneralizedTime');
  }
  const [month, day, hour, minute, second] = match.slice(2).map(Number) as [number, number, number, number, number];
  const ms = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(ms);
  // Date.UTC rolls over out-of-range fields (month 13, day 32); refuse instead.
  if (
    month < 1 ||
    check.getUTCFullYear() !== year ||
    check.getUTCMonth() !== month - 1 ||
    check.getUTCDate() !== day ||
    check.getUTCHours() !== hour ||
    check.getUTCMinutes() !== minute ||
    check.getUTCSeconds() !== second
  ) {
    throw new DerError(`time out of range "${text}"`);
  }
  return ms;
}
