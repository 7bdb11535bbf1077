import { Decoder } from 'cbor-x';
import { assertSingleItem } from './cbor-strict.js';

// Maps stay Maps so integer keys (PCR indexes, COSE labels) keep their type;
// records are off because evidence never uses them; byte strings are copied so
// a verified result never aliases a buffer the caller may reuse.
const decoder = new Decoder({ mapsAsObjects: false, useRecords: false, copyBuffers: true });
// Byte strings as subarrays of the input: for callers that decode a private copy they made themselves.
const viewDecoder = new Decoder({ mapsAsObjects: false, useRecords: false, copyBuffers: false });

/**
 * Decodes exactly one CBOR item after the strict structural pass has accepted
 * it. Throws CborShapeError (from the pass) or the decoder's own error.
 */
export function decodeStrict(bytes: Uint8Array): unknown {
  assertSingleItem(bytes);
  return decoder.decode(bytes);
}

/**
 * Like {@link decodeStrict}, but byte strings in the result are subarrays of `bytes`, sharing its
 * buffer: no allocation per byte string. Only for a private copy the caller owns and never reuses;
 * with a plain Uint8Array input, every byte string is a plain Uint8Array.
 */
export function decodeStrictViews(bytes: Uint8Array): unknown {
  assertSingleItem(bytes);
  return viewDecoder.decode(bytes);
}
