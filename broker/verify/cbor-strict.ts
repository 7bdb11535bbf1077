/**
 * A structural pass over CBOR before any value is decoded. cbor-x decodes
 * leniently (a repeated map key silently overwrites, tags trigger extensions,
 * trailing bytes are ignored by some entry points), which is the wrong default
 * for signed evidence. This pass walks item headers only and rejects what an
 * attestation document never contains, so the decoder afterwards only ever
 * sees a small, unambiguous subset of CBOR.
 */
import { isUtf8 } from 'node:buffer';
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

/** Reads the item header at `pos`; throws CborShapeError on truncation or reserved encodings. */
export function readHead(buf: Uint8Array, pos: number): Head {
  if (pos >= buf.length) throw new CborShapeError('unexpected end of CBOR data');
  const initial = buf[pos]!;
  const major = (initial >> 5) as Major;
  const info = initial & 0x1f;
  if (info < 24) return { major, argument: info, indefinite: false, end: pos + 1 };
  if (info === 31) return { major, argument: -1, indefinite: true, end: pos + 1 };
  if (info > 27) throw new CborShapeError(`reserved additional information ${info} at offset ${pos}`);
  const size = 1 << (info - 24);
  if (pos + 1 + size > buf.length) throw new CborShapeError('unexpected end of CBOR data');
  // Plain number arithmetic (every head of every item passes here; BigInt steps cost more than the rest
  // of the walk). Up to 4 bytes is exact in a double; 8 bytes are read as two exact 32-bit halves.
  let argument: number | bigint;
  if (size <= 4) {
    argument = 0;
    for (let i = 1; i <= size; i++) argument = argument * 256 + buf[pos + i]!;
  } else {
    const high = uint32At(buf, pos + 1);
    const low = uint32At(buf, pos + 5);
    // high < 2^21 keeps high * 2^32 + low at most 2^53 - 1, exactly Number.MAX_SAFE_INTEGER.
    argument = high < 0x200000 ? high * 0x1_0000_0000 + low : (BigInt(high) << 32n) | BigInt(low);
  }
  return { major, argument, indefinite: false, end: pos + 1 + size };
}

function uint32At(buf: Uint8Array, at: number): number {
  return buf[at]! * 0x100_0000 + ((buf[at + 1]! << 16) | (buf[at + 2]! << 8) | buf[at + 3]!);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The decoder's own error for bytes isUtf8 refused, kept as the cause of the refusal. */
function utf8Failure(bytes: Uint8Array): unknown {
  try {
    utf8.decode(bytes);
  } catch (err) {
    return err;
  }
  return new TypeError('invalid UTF-8');
}

/** The length a string/array/map header announces, bounded by what is left in the buffer. */
function boundedLength(head: Head, buf: Uint8Array, what: string): number {
  if (typeof head.argument === 'bigint' || head.argument > buf.length) {
    throw new CborShapeError(`${what} length ${head.argument} exceeds the data`);
  }
  return head.argument;
}

/**
 * Identity of a map key for duplicate detection: integers and text by value
 * (so a non-minimal encoding of the same key is still a duplicate), anything
 * else by its exact bytes.
 */
function keyIdentity(buf: Uint8Array, start: number, end: number): string {
  const head = readHead(buf, start);
  switch (head.major) {
    case Major.Uint:
      return `u${head.argument}`;
    case Major.NegInt:
      return `n${head.argument}`;
    case Major.Text:
      // The walk already checked this is valid UTF-8, and valid UTF-8 byte sequences and the strings
      // they decode to correspond one to one, so the content bytes identify the text exactly
      // (whatever the length encoding), without decoding it a second time.
      return `t${Buffer.from(buf.buffer, buf.byteOffset + head.end, end - head.end).toString('latin1')}`;
    default:
      return `r${Buffer.from(buf.subarray(start, end)).toString('hex')}`;
  }
}

/** Walks one item starting at `pos` and returns the offset just past it. */
function walk(buf: Uint8Array, pos: number, depth: number): number {
  if (depth > MAX_DEPTH) throw new CborShapeError(`nesting deeper than ${MAX_DEPTH}`);
  const head = readHead(buf, pos);
  switch (head.major) {
    case Major.Uint:
    case Major.NegInt:
      if (head.indefinite) throw new CborShapeError(`invalid integer encoding at offset ${pos}`);
      return head.end;
    case Major.Bytes:
    case Major.Text: {
      if (head.indefinite) throw new CborShapeError(`indefinite-length string at offset ${pos}`);
      const len = boundedLength(head, buf, 'string');
      const end = head.end + len;
      if (end > buf.length) throw new CborShapeError('string runs past the end of the data');
      // isUtf8 applies the same WHATWG rules as a fatal TextDecoder (no overlongs, surrogates or
      // code points past U+10FFFF) without building the string; the decoder only explains a refusal.
      if (head.major === Major.Text && !isUtf8(buf.subarray(head.end, end))) {
        throw new CborShapeError(`invalid UTF-8 in text string at offset ${pos}`, { cause: utf8Failure(buf.subarray(head.end, end)) });
      }
      return end;
    }
    case Major.Array:
      return walkContainer(buf, head, depth, 1);
    case Major.Map:
      return walkContainer(buf, head, depth, 2);
    case Major.Tag:
      throw new CborShapeError(`unexpected tag ${head.argument} at offset ${pos}`);
    case Major.Simple:
      // Only false, true and null occur in attestation documents; floats,
      // undefined and unassigned simple values are refused.
      if (head.argument === 20 || head.argument === 21 || head.argument === 22) {
        if (head.end - pos !== 1) throw new CborShapeError(`non-minimal simple value at offset ${pos}`);
        return head.end;
      }
      if (head.indefinite) throw new CborShapeError(`unexpected break at offset ${pos}`);
      throw new CborShapeError(`unsupported simple or float value at offset ${pos}`);
  }
}

function walkContainer(buf: Uint8Array, head: Head, depth: number, itemsPerEntry: 1 | 2): number {
  const keys = itemsPerEntry === 2 ? new Set<string>() : undefined;
  let pos = head.end;
  const visitEntry = (): void => {
    const keyStart = pos;
    pos = walk(buf, pos, depth + 1);
    if (keys) {
      const id = keyIdentity(buf, keyStart, pos);
      if (keys.has(id)) throw new CborShapeError(`duplicate map key at offset ${keyStart}`);
      keys.add(id);
      pos = walk(buf, pos, depth + 1);
    }
  };
  if (head.indefinite) {
    for (;;) {
      if (pos >= buf.length) throw new CborShapeError('indefinite-length container is not terminated');
      if (buf[pos] === 0xff) return pos + 1;
      visitEntry();
    }
  }
  // Each entry takes at least one byte per item, which bounds the loop by the data size.
  const count = boundedLength(head, buf, 'container');
  for (let i = 0; i < count; i++) visitEntry();
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
