// parseCoseSign1 and sigStructure on their own, with hand-assembled COSE:
// each structural rule is shown to be the one that refuses (exact code, and
// the detail where two rules share a code), and what is accepted comes back
// as the exact bytes received.
import { describe, expect, it } from 'vitest';
import { COSE_ALG_ES384, parseCoseSign1, sigStructure } from '../../broker/verify/cose.js';
import { AttestationError } from '../../broker/verify/errors.js';
import { cbor, encodeBytes, encodeMap, signatureInput } from '../support/document.js';

const cat = (...parts: Uint8Array[]): Uint8Array => Uint8Array.from(Buffer.concat(parts));
const b = (...bytes: number[]): Uint8Array => Uint8Array.from(bytes);
const hex = (x: Uint8Array): string => Buffer.from(x).toString('hex');

const PROT = encodeMap([[1, -35]]);
const UNPROT = b(0xa0);
const PAYLOAD = cbor(new Map([['module_id', 'i-1']]));
const SIG = new Uint8Array(96).fill(0x5a);

interface Parts {
  head?: Uint8Array;
  prot?: Uint8Array;
  unprot?: Uint8Array;
  payload?: Uint8Array;
  sig?: Uint8Array;
  extra?: Uint8Array[];
}

/** A COSE_Sign1 from already-encoded items (defaults: a well-formed document). */
function cose({ head = b(0x84), prot = encodeBytes(PROT), unprot = UNPROT, payload = encodeBytes(PAYLOAD), sig = encodeBytes(SIG), extra = [] }: Parts = {}): Uint8Array {
  return cat(head, prot, unprot, payload, sig, ...extra);
}

function refusal(input: Uint8Array): AttestationError {
  try {
    parseCoseSign1(input);
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    return err as AttestationError;
  }
  return expect.unreachable('accepted');
}

function refused(input: Uint8Array, code: string, detail: RegExp): AttestationError {
  const err = refusal(input);
  expect(err.code).toBe(code);
  expect(err.message).toMatch(detail);
  return err;
}

describe('parseCoseSign1 accepts', () => {
  it('a plain COSE_Sign1, returning the exact signed bytes', () => {
    const parsed = parseCoseSign1(cose());
    expect([hex(parsed.protectedHeader), hex(parsed.payload), hex(parsed.signature)]).toEqual([hex(PROT), hex(PAYLOAD), hex(SIG)]);
  });

  it('returns copies: changing the input afterwards changes nothing', () => {
    const input = cose();
    const parsed = parseCoseSign1(input);
    input.fill(0);
    expect([hex(parsed.protectedHeader), hex(parsed.payload), hex(parsed.signature)]).toEqual([hex(PROT), hex(PAYLOAD), hex(SIG)]);
  });

  it.each([
    ['tag 18', { head: b(0xd2, 0x84) }],
    ['a nil unprotected header', { unprot: b(0xf6) }],
    ['an unprotected header with an unrelated label', { unprot: encodeMap([[4, Buffer.from('kid')]]) }],
    ['an unprotected header with text labels', { unprot: encodeMap([['alg', 1]]) }],
    ['a 1-byte payload', { payload: encodeBytes(b(0x01)) }],
    ['a 300-byte payload', { payload: encodeBytes(new Uint8Array(300).fill(3)) }],
  ])('%s', (_name, parts: Parts) => {
    const parsed = parseCoseSign1(cose(parts));
    expect(hex(parsed.signature)).toBe(hex(SIG));
  });

  it('names ES384 as -35', () => {
    expect(COSE_ALG_ES384).toBe(-35);
  });
});

describe('parseCoseSign1 refuses', () => {
  it.each([
    ['empty input', new Uint8Array(), /unexpected end of CBOR data/],
    ['a truncated document', cose().subarray(0, -1), /string runs past the end/],
    ['a truncated header', b(0x58), /unexpected end of CBOR data/],
    ['a trailing byte', cat(cose(), b(0x00)), /MALFORMED|trailing|after/i],
    ['tag 17 (COSE_Mac0)', cose({ head: b(0xd1, 0x84) }), /unexpected tag 17/],
    ['tag 18 twice', cose({ head: b(0xd2, 0xd2, 0x84) }), /expected a definite-length array of 4 items/],
    ['an array of 3', cat(b(0x83), encodeBytes(PROT), UNPROT, encodeBytes(PAYLOAD)), /expected a definite-length array of 4 items/],
    ['an array of 5', cose({ head: b(0x85), extra: [b(0x40)] }), /expected a definite-length array of 4 items/],
    ['an indefinite-length array', cose({ head: b(0x9f), extra: [b(0xff)] }), /expected a definite-length array of 4 items/],
    // Its first four items are a valid COSE_Sign1's, the other four are filler.
    ['a map of 4 pairs', cose({ head: b(0xa4), extra: [b(0x01, 0x02, 0x03, 0x04)] }), /expected a definite-length array of 4 items/],
    ['a byte string', encodeBytes(b(1, 2, 3, 4)), /expected a definite-length array of 4 items/],
    ['a protected header in a text string', cose({ prot: cbor('a') }), /protected header must be a definite-length byte string/],
    // The strict CBOR pass refuses indefinite-length strings before COSE looks at them.
    ['an indefinite-length protected header', cose({ prot: cat(b(0x5f), encodeBytes(PROT), b(0xff)) }), /indefinite-length string/],
    ['a payload in a text string', cose({ payload: cbor('hello world') }), /payload must be a definite-length byte string/],
    ['an indefinite-length payload', cose({ payload: cat(b(0x5f), encodeBytes(PAYLOAD), b(0xff)) }), /indefinite-length string/],
    ['a nil payload (detached)', cose({ payload: b(0xf6) }), /payload must be a definite-length byte string/],
    ['an empty payload', cose({ payload: b(0x40) }), /payload is empty/],
    ['a signature in a text string', cose({ sig: cbor('s'.repeat(96)) }), /signature must be a definite-length byte string/],
    ['a 95-byte signature', cose({ sig: encodeBytes(SIG.subarray(1)) }), /signature must be 96 bytes/],
    ['a 97-byte signature', cose({ sig: encodeBytes(cat(SIG, b(0))) }), /signature must be 96 bytes/],
    ['an unprotected header in an array', cose({ unprot: b(0x80) }), /unprotected header must be a map/],
    ['an unprotected header that is true', cose({ unprot: b(0xf5) }), /unprotected header must be a map/],
    ['an unprotected header that is undefined', cose({ unprot: b(0xf7) }), /unsupported simple/],
    ['an unprotected header that is 0', cose({ unprot: b(0x00) }), /unprotected header must be a map/],
    ['alg in the unprotected header', cose({ unprot: encodeMap([[1, -35]]) }), /must not carry alg or crit/],
    ['crit in the unprotected header', cose({ unprot: encodeMap([[2, [1]]]) }), /must not carry alg or crit/],
    ['a protected header that is not CBOR', cose({ prot: encodeBytes(b(0xa1, 0x01)) }), /protected header is not valid CBOR/],
    ['a protected header that is an array', cose({ prot: encodeBytes(cbor([1, -35])) }), /protected header must encode a map/],
    ['a protected header that is an integer', cose({ prot: encodeBytes(b(0x01)) }), /protected header must encode a map/],
    ['a protected header with an extra parameter', cose({ prot: encodeBytes(encodeMap([[1, -35], [4, Buffer.from('k')]])) }), /parameters other than the algorithm/],
    ['a protected header with a repeated alg', cose({ prot: encodeBytes(encodeMap([[1, -35], [1, -35]])) }), /protected header is not valid CBOR/],
  ])('%s: MALFORMED_COSE', (_name, input, detail) => {
    refused(input, 'MALFORMED_COSE', detail);
  });

  it.each([
    ['an empty protected header', cose({ prot: b(0x40) }), /protected header is empty/],
    ['an empty map', cose({ prot: encodeBytes(b(0xa0)) }), /names no algorithm/],
    ['no alg among other labels', cose({ prot: encodeBytes(encodeMap([[4, Buffer.from('k')]])) }), /names no algorithm/],
    ['ES256', cose({ prot: encodeBytes(encodeMap([[1, -7]])) }), /algorithm -7 is not ES384/],
    ['ES512', cose({ prot: encodeBytes(encodeMap([[1, -36]])) }), /algorithm -36 is not ES384/],
    ['alg as text', cose({ prot: encodeBytes(encodeMap([[1, 'ES384']])) }), /algorithm ES384 is not ES384/],
    ['alg as +35', cose({ prot: encodeBytes(encodeMap([[1, 35]])) }), /algorithm 35 is not ES384/],
  ])('%s: UNSUPPORTED_ALG', (_name, input, detail) => {
    refused(input, 'UNSUPPORTED_ALG', detail);
  });

  it('keeps the lower-level error as the cause', () => {
    expect(refused(cose({ prot: encodeBytes(b(0xa1, 0x01)) }), 'MALFORMED_COSE', /not valid CBOR/).cause).toBeInstanceOf(Error);
    expect(refused(b(0x58), 'MALFORMED_COSE', /unexpected end/).cause).toBeInstanceOf(Error);
    expect(refused(b(0x58), 'MALFORMED_COSE', /^COSE_Sign1: /).message).toBe('COSE_Sign1: unexpected end of CBOR data');
  });
});

describe('sigStructure', () => {
  it.each([1, 23, 24, 255, 256, 65_535, 65_536, 70_000])('encodes a %d-byte payload as CBOR ["Signature1", protected, h\'\', payload]', (length) => {
    const payload = new Uint8Array(length).fill(0xab);
    expect(hex(sigStructure(PROT, payload))).toBe(hex(signatureInput(PROT, payload)));
  });

  it.each([0, 1, 23, 24, 300])('encodes a %d-byte protected header', (length) => {
    const prot = new Uint8Array(length).fill(0xcd);
    expect(hex(sigStructure(prot, PAYLOAD))).toBe(hex(signatureInput(prot, PAYLOAD)));
  });
});
