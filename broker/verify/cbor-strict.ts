/**
 * A structural pass over CBOR before any value is decoded. cbor-x decodes
 * leniently (a repeated map key silently overwrites, tags trigger extensions,
 * trailing bytes are ignored by some entry points), which is the wrong default
 * for signed evidence. This pass walks item headers only and rejects what an
 * attestation document never contains, so the decoder afterwards only ever
 * sees a small, unambiguous subset of CBOR.
 */
import { CodedError } from '../../lib/coded-error.js';

/** Thrown by the structural pass; callers translate it to their own error code. */
export class CborShapeError extends CodedError<'CBOR_MALFORMED'> {
  override readonly name = 'CborShapeError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('CBOR_MALFORMED', message, options);
  }
}

/** CBOR major types (RFC 8949 section 3.1). */
export const Major = {
  Uint: 0,
  NegInt: 1,
  Bytes: 2,
  Text: 3,
  Array: 4,
  Map: 5,
  Tag: 6,
  Simple: 7,
} as const;
export type Major = (typeof Major)[keyof typeof Major];

/** One decoded item header. `argument` is -1 for indefinite length. */
export interface Head {
  readonly major: Major;
  readonly argument: number | bigint;
  readonly indefinite: boolean;
  /** Offset just past the header. */
  readonly end: number;
}

const MAX_DEPTH = 16;

// The walk below visits every item of every document, so it reads heads into these module-level
// slots instead of allocating a Head per item (JavaScript runs one walk at a time; each value is
// copied to a local before the walk recurses).
let headMajor: Major = Major.Uint;
let headArgument: number | bigint = 0;
let headIndefinite = false;
let headEnd = 0;

function scanHead(buf: Uint8Array, pos: number): void {
  if (pos >= buf.length) throw new CborShapeError('unexpected end of CBOR data');
  const initial = buf[pos]!;
  headMajor = (initial >> 5) as Major;
  const info = initial & 0x1f;
  headIndefinite = false;
  if (info < 24) {
    headArgument = info;
    headEnd = pos + 1;
    return;
  }
  if (info === 31) {
    headArgument = -1;
    headIndefinite = true;
    headEnd = pos + 1;
    return;
  }
  if (info > 27) throw new CborShapeError(`reserved additional information ${info} at offset ${pos}`);
  const size = 1 << (info - 24);
  if (pos + 1 + size > buf.length) throw new CborShapeError('unexpected end of CBOR data');
  // Plain number arithmetic: BigInt steps cost more than the rest of the walk. Up to 4 bytes is
  // exact in a double; 8 bytes are read as two exact 32-bit halves.
  if (size <= 4) {
    let argument = 0;
    for (let i = 1; i <= size; i++) argument = argument * 256 + buf[pos + i]!;
    headArgument = argument;
  } else {
    const high = uint32At(buf, pos + 1);
    const low = uint32At(buf, pos + 5);
    // high < 2^21 keeps high * 2^32 + low at most 2^53 - 1, exactly Number.MAX_SAFE_INTEGER.
    headArgument = high < 0x200000 ? high * 0x1_0000_0000 + low : (BigInt(high) << 32n) | BigInt(low);
  }
  headEnd = pos + 1 + size;
}

function uint32At(buf: Uint8Array, at: number): number {
  return buf[at]! * 0x100_0000 + ((buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!);
}

/** Reads the item header at `pos`; throws CborShapeError on truncation or reserved encodings. */
export function readHead(buf: Uint8Array, pos: number): Head {
  scanHead(buf, pos);
  return { major: headMajor, argument: headArgument, indefinite: headIndefinite, end: headEnd };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The length a string/array/map header announces, bounded by what is left in the buffer. */
function boundedLength(argument: number | bigint, buf: Uint8Array, what: string): number {
  if (typeof argument === 'bigint' || argument > buf.length) {
    throw new CborShapeError(`${what} length ${argument} exceeds the data`);
  }
  return argument;
}

const SHORT_KEY = 24;

/**
 * Identity of a map key for duplicate detection: integers and text by value
 * (so a non-minimal encoding of the same key is still a duplicate), anything
 * else by its exact bytes. Integers up to 2^53 - 1 are numbers (an unsigned
 * n as n, a negative -1 - n as itself: the two ranges cannot meet), larger
 * ones and everything else strings.
 */
function keyIdentity(buf: Uint8Array, start: number, end: number): number | string {
  scanHead(buf, start);
  switch (headMajor) {
    case Major.Uint:
      return typeof headArgument === 'number' ? headArgument : `u${headArgument}`;
    case Major.NegInt:
      return typeof headArgument === 'number' ? -1 - headArgument : `n${headArgument}`;
    case Major.Text: {
      // The walk already checked this is valid UTF-8, and valid UTF-8 byte sequences and the strings
      // they decode to correspond one to one, so the content bytes identify the text exactly
      // (whatever the length encoding), without decoding it a second time. Except one thing: the
      // decoder this replaces (TextDecoder, ignoreBOM false) dropped one leading byte-order mark, so
      // "\uFEFFa" and "a" were the same key and a map with both was refused; skip it here too.
      const bom = end - headEnd >= 3 && buf[headEnd] === 0xef && buf[headEnd + 1] === 0xbb && buf[headEnd + 2] === 0xbf ? 3 : 0;
      // The same latin1 string either way; a short key (every key of a document) is built without a Buffer per key.
      if (end - headEnd - bom <= SHORT_KEY) {
        let id = 't';
        for (let i = headEnd + bom; i < end; i++) id += String.fromCharCode(buf[i]!);
        return id;
      }
      return `t${Buffer.from(buf.buffer, buf.byteOffset + headEnd + bom, end - headEnd - bom).toString('latin1')}`;
    }
    default:
      return `r${Buffer.from(buf.subarray(start, end)).toString('hex')}`;
  }
}

/**
 * Whether `buf[start..end)` is all ASCII, which is valid UTF-8 as it stands: a document's keys and texts are, and a
 * loop over a few bytes costs a tenth of a TextDecoder call (issue 15). Anything else is decoded as before.
 */
function isAscii(buf: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i]! >= 0x80) return false;
  return true;
}

/** Walks one item starting at `pos` and returns the offset just past it. */
function walk(buf: Uint8Array, pos: number, depth: number): number {
  if (depth > MAX_DEPTH) throw new CborShapeError(`nesting deeper than ${MAX_DEPTH}`);
  scanHead(buf, pos);
  const major = headMajor;
  const argument = headArgument;
  const indefinite = headIndefinite;
  const end = headEnd;
  switch (major) {
    case Major.Uint:
    case Major.NegInt:
      if (indefinite) throw new CborShapeError(`invalid integer encoding at offset ${pos}`);
      return end;
    case Major.Bytes:
    case Major.Text: {
      if (indefinite) throw new CborShapeError(`indefinite-length string at offset ${pos}`);
      const len = boundedLength(argument, buf, 'string');
      const stringEnd = end + len;
      if (stringEnd > buf.length) throw new CborShapeError('string runs past the end of the data');
      if (major === Major.Text && !isAscii(buf, end, stringEnd)) {
        try {
          utf8.decode(buf.subarray(end, stringEnd));
        } catch (cause) {
          throw new CborShapeError(`invalid UTF-8 in text string at offset ${pos}`, { cause });
        }
      }
      return stringEnd;
    }
    case Major.Array:
      return walkContainer(buf, argument, indefinite, end, depth, false);
    case Major.Map:
      return walkContainer(buf, argument, indefinite, end, depth, true);
    case Major.Tag:
      throw new CborShapeError(`unexpected tag ${argument} at offset ${pos}`);
    case Major.Simple:
      // Only false, true and null occur in attestation documents; floats,
      // undefined and unassigned simple values are refused.
      if (argument === 20 || argument === 21 || argument === 22) {
        if (end - pos !== 1) throw new CborShapeError(`non-minimal simple value at offset ${pos}`);
        return end;
      }
      if (indefinite) throw new CborShapeError(`unexpected break at offset ${pos}`);
      throw new CborShapeError(`unsupported simple or float value at offset ${pos}`);
  }
}

function walkContainer(buf: Uint8Array, argument: number | bigint, indefinite: boolean, start: number, depth: number, isMap: boolean): number {
  const keys = isMap ? new Set<number | string>() : undefined;
  // Each entry takes at least one byte per item, which bounds a definite loop by the data size.
  const count = indefinite ? Infinity : boundedLength(argument, buf, 'container');
  let pos = start;
  for (let i = 0; i < count; i++) {
    if (indefinite) {
      if (pos >= buf.length) throw new CborShapeError('indefinite-length container is not terminated');
      if (buf[pos] === 0xff) return pos + 1;
    }
    const keyStart = pos;
    pos = walk(buf, pos, depth + 1);
    if (keys) {
      const id = keyIdentity(buf, keyStart, pos);
      if (keys.has(id)) throw new CborShapeError(`duplicate map key at offset ${keyStart}`);
      keys.add(id);
      pos = walk(buf, pos, depth + 1);
    }
  }
  return pos;
}

/** Offset just past the well-formed item that starts at `pos` (same rules as assertSingleItem). */
export function itemEnd(buf: Uint8Array, pos: number): number {
  return walk(buf, pos, 0);
}

/**
 * Checks that `buf[start..end)` is exactly one well-formed item of the
 * accepted subset: no tags, no floats or undefined, no indefinite-length
 * strings, no duplicate map keys, valid UTF-8, bounded nesting, nothing
 * after the item.
 */
export function assertSingleItem(buf: Uint8Array, start = 0, end = buf.length): void {
  const view = start === 0 && end === buf.length ? buf : buf.subarray(start, end);
  const itemEnd = walk(view, 0, 0);
  if (itemEnd !== view.length) {
    throw new CborShapeError(`${view.length - itemEnd} trailing byte(s) after the CBOR item`);
  }
}
