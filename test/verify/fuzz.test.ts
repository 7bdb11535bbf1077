/**
 * Property-based tests: nothing but a typed AttestationError ever escapes,
 * and no mutation of a genuine document is ever accepted.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Encoder } from 'cbor-x';
import { isAttestationError, verifyAttestation, type VerifiedDocument } from '../../index.js';
import { fixtureBytes, realDocuments } from '../support/fixtures.js';

const docs = realDocuments.map((entry) => ({ entry, bytes: fixtureBytes(entry.file) }));
const encoder = new Encoder({ tagUint8Array: false, useRecords: false });

/** Runs verification and classifies the outcome; any other exception fails the property. */
function outcome(bytes: Uint8Array, at: number): { accepted: VerifiedDocument } | { code: string } {
  try {
    return { accepted: verifyAttestation(bytes, { at, allowDebug: true }) };
  } catch (err) {
    if (isAttestationError(err)) return { code: err.code };
    throw err;
  }
}

/** Offset of the unprotected header: the one byte of a real document outside the signature. */
function unprotectedOffset(bytes: Uint8Array): number {
  // 0x84, then the protected bstr (1-byte head + content), then the unprotected map.
  return 2 + (bytes[1]! & 0x1f);
}

function sameContent(a: VerifiedDocument, b: VerifiedDocument): boolean {
  return a.documentSha256 !== b.documentSha256 && a.moduleId === b.moduleId && a.timestamp === b.timestamp;
}

describe('random input', () => {
  it('random bytes never verify and only throw AttestationError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 6000 }), fc.integer({ min: 0, max: 2 ** 45 }), (bytes, at) => {
        expect('code' in outcome(bytes, at)).toBe(true);
      }),
      { numRuns: 1500 },
    );
  });

  it('random CBOR values and COSE-shaped arrays never verify', () => {
    const value = fc.oneof(
      fc.anything({ withMap: true, withTypedArray: false, maxDepth: 3 }),
      fc.tuple(fc.uint8Array({ maxLength: 16 }), fc.constant(new Map()), fc.uint8Array({ maxLength: 512 }), fc.uint8Array({ minLength: 96, maxLength: 96 })),
    );
    fc.assert(
      fc.property(value, fc.boolean(), (v, tag) => {
        let encoded: Uint8Array;
        try {
          encoded = new Uint8Array(encoder.encode(v));
        } catch {
          return; // not encodable: nothing to verify
        }
        const bytes = tag ? Buffer.concat([Uint8Array.of(0xd2), encoded]) : encoded;
        expect('code' in outcome(bytes, Date.UTC(2024, 0, 1))).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it('random payloads inside a well-formed COSE envelope never verify', () => {
    const base = docs[0]!;
    const head = base.bytes.subarray(0, unprotectedOffset(base.bytes) + 1);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 2000 }), fc.uint8Array({ minLength: 96, maxLength: 96 }), (payload, sig) => {
        const bstr = (b: Uint8Array): Uint8Array => Buffer.concat([Uint8Array.of(0x59, b.length >> 8, b.length & 0xff), b]);
        const doc = Buffer.concat([head, bstr(payload), Uint8Array.of(0x58, 96), sig]);
        expect('code' in outcome(doc, base.entry.timestamp_ms)).toBe(true);
      }),
      { numRuns: 500 },
    );
  });
});

describe('mutations of real documents', () => {
  const docIndex = fc.integer({ min: 0, max: docs.length - 1 });

  it('no single-byte change is accepted (except an equivalent unsigned header)', () => {
    fc.assert(
      fc.property(docIndex, fc.nat(), fc.integer({ min: 1, max: 255 }), (i, pos, xor) => {
        const { entry, bytes } = docs[i]!;
        const offset = pos % bytes.length;
        const mutated = bytes.slice();
        mutated[offset]! ^= xor;
        const result = outcome(mutated, entry.timestamp_ms);
        if ('accepted' in result) {
          // Only the unsigned header byte may change without effect, and then the content is identical.
          expect(offset).toBe(unprotectedOffset(bytes));
          expect(sameContent(result.accepted, verifyAttestation(bytes, { at: entry.timestamp_ms, allowDebug: true }))).toBe(true);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('every byte of the signed parts is covered: flipping each one is rejected', () => {
    // Exhaustive over one document's protected header, payload head and signature, and a stride of the payload.
    const { entry, bytes } = docs[0]!;
    const skip = unprotectedOffset(bytes);
    for (let offset = 0; offset < bytes.length; offset += offset < 16 || offset > bytes.length - 110 ? 1 : 7) {
      if (offset === skip) continue;
      const mutated = bytes.slice();
      mutated[offset]! ^= 0x01;
      expect('code' in outcome(mutated, entry.timestamp_ms), `offset ${offset}`).toBe(true);
    }
  });

  it('no insertion, deletion or truncation is accepted', () => {
    const edit = fc.oneof(
      fc.record({ kind: fc.constant('insert' as const), pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
      fc.record({ kind: fc.constant('delete' as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
      fc.record({ kind: fc.constant('truncate' as const), pos: fc.nat() }),
    );
    fc.assert(
      fc.property(docIndex, edit, (i, e) => {
        const { entry, bytes } = docs[i]!;
        const p = e.pos % bytes.length;
        let mutated: Uint8Array;
        if (e.kind === 'insert') mutated = Buffer.concat([bytes.subarray(0, p), Uint8Array.of(e.byte), bytes.subarray(p)]);
        else if (e.kind === 'delete') mutated = Buffer.concat([bytes.subarray(0, p), bytes.subarray(p + e.len)]);
        else mutated = bytes.subarray(0, p);
        // The one insertion that is not a mutation: tag 18 (0xD2) before an untagged COSE_Sign1 is the same
        // document in its tagged form, which design.md accepts; it is checked on its own below.
        if (e.kind === 'insert' && p === 0 && e.byte === 0xd2 && bytes[0] !== 0xd2) return;
        expect('code' in outcome(mutated, entry.timestamp_ms)).toBe(true);
      }),
      { numRuns: 1500 },
    );
  });

  it('tagging an untagged document with tag 18 yields the same verified document, and a second tag is rejected', () => {
    for (const { entry, bytes } of docs.filter((d) => d.bytes[0] !== 0xd2)) {
      const tagged = outcome(Buffer.concat([Uint8Array.of(0xd2), bytes]), entry.timestamp_ms);
      const plain = outcome(bytes, entry.timestamp_ms);
      expect('accepted' in tagged && 'accepted' in plain && tagged.accepted.documentSha256 !== undefined).toBe(true);
      if ('accepted' in tagged && 'accepted' in plain) {
        expect(tagged.accepted.moduleId).toBe(plain.accepted.moduleId);
        expect(tagged.accepted.pcrs).toEqual(plain.accepted.pcrs);
        expect(tagged.accepted.nonce).toEqual(plain.accepted.nonce);
      }
      expect('code' in outcome(Buffer.concat([Uint8Array.of(0xd2, 0xd2), bytes]), entry.timestamp_ms)).toBe(true);
    }
  });

  it('swapping payloads or signatures between genuine documents is rejected', () => {
    fc.assert(
      fc.property(docIndex, docIndex, (a, b) => {
        fc.pre(a !== b);
        const x = docs[a]!.bytes;
        const y = docs[b]!.bytes;
        // Genuine signature of y on x's envelope and payload.
        const swapped = Buffer.concat([x.subarray(0, x.length - 96), y.subarray(y.length - 96)]);
        expect('code' in outcome(swapped, docs[a]!.entry.timestamp_ms)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});
