/**
 * Regression (review of the issue-15 verifier rewrite, differential test against b68d996): text map
 * keys are compared as the strict pass's UTF-8 decoder reads them, and that decoder drops one leading
 * byte-order mark. So "\uFEFFa" and "a" are the same key, and a map carrying both is refused, exactly
 * as before the rewrite. The byte-identity shortcut had stopped seeing them as duplicates, and a
 * genuine AWS document with such an (unsigned) unprotected header was accepted where it had been
 * refused as MALFORMED_COSE.
 */
import { describe, expect, it } from 'vitest';
import { CborShapeError, assertSingleItem } from '../../broker/verify/cbor-strict.js';
import { verifyAttestation } from '../../index.js';
import { codeOf } from '../support/codes.js';
import { fixtureBytes, realDocuments } from '../support/fixtures.js';

const strict = (hex: string): void => assertSingleItem(Buffer.from(hex.replace(/ /g, ''), 'hex'));

describe('map keys that differ only by a leading byte-order mark', () => {
  it.each([
    ['{"\\uFEFF": 0, "": 0}', 'a2 63efbbbf 00 60 00'],
    ['{"\\uFEFFa": 0, "a": 0}', 'a2 64efbbbf61 00 6161 00'],
    ['{"a": 0, "\\uFEFFa": 0}, the BOM key with a non-minimal length', 'a2 6161 00 7804efbbbf61 00'],
    ['indefinite {"\\uFEFFx": 0, "x": 0}', 'bf 64efbbbf78 00 6178 00 ff'],
  ])('%s is a duplicate key', (_name, hex) => {
    expect(() => strict(hex)).toThrow(CborShapeError);
    expect(() => strict(hex)).toThrow(/duplicate map key/);
  });

  it.each([
    ['one BOM is dropped, not two: "\\uFEFF\\uFEFFa" and "a" differ', 'a2 67efbbbfefbbbf61 00 6161 00'],
    ['"\\uFEFF\\uFEFFa" and "\\uFEFFa" differ', 'a2 67efbbbfefbbbf61 00 64efbbbf61 00'],
    ['a BOM after the first character is kept: "a\\uFEFF" and "a" differ', 'a2 6461efbbbf 00 6161 00'],
    ['byte-string keys compare by bytes', 'a2 43efbbbf 00 40 00'],
  ])('%s', (_name, hex) => {
    expect(() => strict(hex)).not.toThrow();
  });

  it('a real AWS document whose unprotected header is {"\\uFEFF": 0, "": 0} is MALFORMED_COSE', () => {
    const entry = realDocuments.find((d) => !d.cose_tag18) ?? realDocuments[0]!;
    const bytes = fixtureBytes(entry.file);
    const base = bytes[0] === 0xd2 ? 1 : 0;
    const at = base + 2 + (bytes[base + 1]! & 0x1f);
    expect(bytes[at]).toBe(0xa0);
    const header = Buffer.from('a263efbbbf006000', 'hex');
    const mutated = new Uint8Array(Buffer.concat([bytes.subarray(0, at), header, bytes.subarray(at + 1)]));
    expect(codeOf(() => verifyAttestation(bytes, { at: entry.timestamp_ms, allowDebug: true }))).toBe('NO_ERROR');
    expect(codeOf(() => verifyAttestation(mutated, { at: entry.timestamp_ms, allowDebug: true }))).toBe('MALFORMED_COSE');
  });
});
