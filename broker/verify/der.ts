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
  return new TlvView(buf, tag, pos, contentStart, end);
}

/**
 * A Tlv whose byte views are made on first use: a certificate has dozens of elements and reads the
 * bytes of few, and every typed-array view is an allocation the garbage collector then tracks.
 */
class TlvView implements Tlv {
  #content: Uint8Array | undefined;
  #raw: Uint8Array | undefined;
  constructor(
    readonly buf: Uint8Array,
    readonly tag: number,
    readonly start: number,
    readonly contentStart: number,
    readonly end: number,
  ) {}

  get content(): Uint8Array {
    return (this.#content ??= this.buf.subarray(this.contentStart, this.end));
  }

  get raw(): Uint8Array {
    return (this.#raw ??= this.buf.subarray(this.start, this.end));
  }
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

function timeText(c: Uint8Array): string {
  return String.fromCharCode(...c);
}

/** The two ASCII digits at `c[at]`, `c[at + 1]` as a number, or -1 when either is not a digit. */
function twoDigits(c: Uint8Array, at: number): number {
  const high = c[at]! - 0x30;
  const low = c[at + 1]! - 0x30;
  return high >= 0 && high <= 9 && low >= 0 && low <= 9 ? high * 10 + low : -1;
}

/**
 * UTCTime or GeneralizedTime in the strict RFC 5280 forms, as epoch milliseconds:
 * YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ, ASCII digits only. Read byte by byte (every new
 * enclave leaf has two): the text is only built for an error message.
 */
export function readTime(tlv: Tlv): number {
  const c = tlv.content;
  let year: number;
  let at: number;
  if (tlv.tag === Tag.UtcTime) {
    const yy = c.length === 13 ? twoDigits(c, 0) : -1;
    if (yy < 0) throw new DerError(`invalid UTCTime "${timeText(c)}"`);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    at = 2;
  } else if (tlv.tag === Tag.GeneralizedTime) {
    const century = c.length === 15 ? twoDigits(c, 0) : -1;
    const yy = c.length === 15 ? twoDigits(c, 2) : -1;
    if (century < 0 || yy < 0) throw new DerError(`invalid GeneralizedTime "${timeText(c)}"`);
    year = century * 100 + yy;
    at = 4;
  } else {
    throw new DerError('expected UTCTime or GeneralizedTime');
  }
  const month = twoDigits(c, at);
  const day = twoDigits(c, at + 2);
  const hour = twoDigits(c, at + 4);
  const minute = twoDigits(c, at + 6);
  const second = twoDigits(c, at + 8);
  if (month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0 || c[at + 10] !== 0x5a) {
    throw new DerError(`invalid ${tlv.tag === Tag.UtcTime ? 'UTCTime' : 'GeneralizedTime'} "${timeText(c)}"`);
  }
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
    throw new DerError(`time out of range "${timeText(c)}"`);
  }
  return ms;
}
