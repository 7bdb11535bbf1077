import { Decoder } from 'cbor-x';
import { assertSingleItem } from './cbor-strict.js';

// Maps stay Maps so integer keys (PCR indexes, COSE labels) keep their type;
// records are off because evidence never uses them; byte strings are copied so
// a verified result never aliases a buffer the caller may reuse.
const decoder = new Decoder({ mapsAsObjects: false, useRecords: false, copyBuffers: true });

/**
 * Decodes exactly one CBOR item after the strict structural pass has accepted
 * it. Throws CborShapeError (from the pass) or the decoder's own error.
 */
export function decodeStrict(bytes: Uint8Array): unknown {
  assertSingleItem(bytes);
  return decoder.decode(bytes);
}
