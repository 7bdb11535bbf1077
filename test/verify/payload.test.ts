// parsePayload on its own: the schema of the attestation payload, both sides
// of every size and range limit, every type it refuses (MALFORMED_PAYLOAD),
// and exactly what it returns.
import { describe, expect, it } from 'vitest';
import { AttestationError } from '../../broker/verify/errors.js';
import { parsePayload } from '../../broker/verify/payload.js';
import { Raw, cbor, encodeMap, uint } from '../support/document.js';

type Entries = Array<readonly [unknown, unknown]>;
const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
const bytes = (n: number, fill = 7): Uint8Array => new Uint8Array(n).fill(fill);
const pcrMap = (count: number, size = 48): Map<number, Uint8Array> => new Map(Array.from({ length: count }, (_, i) => [i, bytes(size, i + 1)] as const));

function entries(over: Record<string, unknown> = {}, drop: string[] = []): Entries {
  const base: Record<string, unknown> = {
    module_id: 'i-0123456789abcdef0-enc0123456789abcdef',
    digest: 'SHA384',
    timestamp: uint(AT),
    pcrs: pcrMap(3),
    certificate: bytes(100, 0xce),
    cabundle: [bytes(50, 0xca), bytes(60, 0xcb)],
    public_key: null,
    user_data: null,
    nonce: null,
    ...over,
  };
  return Object.entries(base).filter(([k]) => !drop.includes(k));
}

const payload = (over: Record<string, unknown> = {}, drop: string[] = []): Uint8Array => encodeMap(entries(over, drop));
const hexOf = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString('hex'));

function refused(input: Uint8Array): void {
  try {
    parsePayload(input);
  } catch (err) {
    expect(err).toBeInstanceOf(AttestationError);
    expect((err as AttestationError).code).toBe('MALFORMED_PAYLOAD');
    return;
  }
  expect.unreachable('accepted');
}

describe('parsePayload accepts', () => {
  it('a complete payload, returning every field exactly', () => {
    const p = parsePayload(payload({ public_key: bytes(65, 4), user_data: bytes(3, 5), nonce: bytes(32, 6) }));
    expect(p.moduleId).toBe('i-0123456789abcdef0-enc0123456789abcdef');
    expect(p.digest).toBe('SHA384');
    expect(p.timestamp).toBe(AT);
    expect([...p.pcrs.keys()]).toEqual([0, 1, 2]);
    expect([...p.pcrs.values()].map(hexOf)).toEqual([hexOf(bytes(48, 1)), hexOf(bytes(48, 2)), hexOf(bytes(48, 3))]);
    expect(hexOf(p.certificate)).toBe(hexOf(bytes(100, 0xce)));
    expect(p.cabundle.map(hexOf)).toEqual([hexOf(bytes(50, 0xca)), hexOf(bytes(60, 0xcb))]);
    expect([hexOf(p.publicKey), hexOf(p.userData), hexOf(p.nonce)]).toEqual([hexOf(bytes(65, 4)), hexOf(bytes(3, 5)), hexOf(bytes(32, 6))]);
    // Plain Uint8Arrays, not the decoder's Buffers.
    for (const b of [p.certificate, p.cabundle[0]!, p.publicKey!, p.userData!, p.nonce!, p.pcrs.get(0)!]) expect(Object.getPrototypeOf(b)).toBe(Uint8Array.prototype);
  });

  it('optional fields absent or null as null', () => {
    for (const p of [parsePayload(payload()), parsePayload(payload({}, ['public_key', 'user_data', 'nonce']))]) {
      expect([p.publicKey, p.userData, p.nonce]).toEqual([null, null, null]);
    }
  });

  it.each([
    ['public_key of 1 byte', { public_key: bytes(1) }],
    ['public_key of 1024 bytes', { public_key: bytes(1024) }],
    ['empty user_data and nonce', { user_data: bytes(0), nonce: bytes(0) }],
    ['user_data and nonce of 1024 bytes', { user_data: bytes(1024), nonce: bytes(1024) }],
    ['a 1-byte certificate', { certificate: bytes(1) }],
    ['a 1024-byte certificate', { certificate: bytes(1024) }],
    ['a cabundle of one 1-byte entry', { cabundle: [bytes(1)] }],
    ['a 1024-byte cabundle entry', { cabundle: [bytes(1024)] }],
    ['a 1-character module_id', { module_id: 'x' }],
    ['32 PCRs', { pcrs: pcrMap(32) }],
    ['one PCR', { pcrs: pcrMap(1) }],
    ['PCR index 31 alone', { pcrs: new Map([[31, bytes(48)]]) }],
    ['32-byte PCRs', { pcrs: pcrMap(2, 32) }],
    ['64-byte PCRs', { pcrs: pcrMap(2, 64) }],
    ['timestamp 1', { timestamp: 1 }],
    ['a small timestamp as uint64', { timestamp: new Raw(Uint8Array.of(0x1b, 0, 0, 0, 0, 0, 0, 0, 5)) }],
    ['timestamp 2^53 - 1 as uint64', { timestamp: uint(Number.MAX_SAFE_INTEGER) }],
  ])('%s', (_name, over) => {
    const p = parsePayload(payload(over));
    for (const [key, value] of Object.entries(over)) {
      if (key === 'timestamp') expect(p.timestamp).toBe(value instanceof Raw ? Number(Buffer.from(value.bytes.subarray(1)).readBigUInt64BE()) : value);
      if (value instanceof Uint8Array) expect(hexOf((p as unknown as Record<string, Uint8Array>)[key === 'public_key' ? 'publicKey' : key === 'user_data' ? 'userData' : key]!)).toBe(hexOf(value));
      if (value instanceof Map) expect(p.pcrs.size).toBe(value.size);
    }
  });
});

describe('parsePayload refuses', () => {
  it.each([
    ['not CBOR', Uint8Array.of(0xa1)],
    ['an empty input', new Uint8Array()],
    ['trailing bytes', Uint8Array.from(Buffer.concat([payload(), Uint8Array.of(0)]))],
    ['an array', cbor([1, 2])],
    ['a text string', cbor('payload')],
    ['null', Uint8Array.of(0xf6)],
    ['an integer key', encodeMap([...entries(), [1, 'x']])],
    ['a byte-string key', encodeMap([...entries(), [Buffer.from('nonce'), 'x']])],
    ['an unknown field', encodeMap([...entries(), ['enclave_name', 'x']])],
    ['a duplicate field', encodeMap([...entries(), ['digest', 'SHA384']])],
  ])('%s', (_name, input) => {
    refused(input);
  });

  it.each([
    ['module_id', [undefined, '', 7, null, Buffer.from('i-1')]],
    ['digest', [undefined, 'SHA256', 'sha384', 384, null, Buffer.from('SHA384')]],
    ['timestamp', [undefined, 0, -5, 1.5, '1', null, new Raw(Uint8Array.of(0x1b, 0, 0x20, 0, 0, 0, 0, 0, 0)), new Raw(Uint8Array.of(0x1b, 0x80, 0, 0, 0, 0, 0, 0, 0)), new Raw(Uint8Array.of(0xfb, 0x42, 0x77, 0x9c, 0x8e, 0x5f, 0x80, 0x00, 0x00))]],
    ['certificate', [undefined, null, bytes(0), bytes(1025), 'cert', [bytes(10)]]],
    ['cabundle', [undefined, null, [], 'root', bytes(10), [bytes(10), 5], [bytes(0)], [bytes(1025)], [bytes(10), null]]],
    ['public_key', [bytes(0), bytes(1025), 'key', 5, [bytes(1)]]],
    ['user_data', [bytes(1025), 'data', false, 0]],
    ['nonce', [bytes(1025), 'abc', false, 0]],
    ['pcrs', [undefined, null, [bytes(48)], new Map(), pcrMap(33), bytes(48)]],
  ])('a malformed %s', (field, values) => {
    for (const value of values) refused(value === undefined ? payload({}, [field]) : payload({ [field]: value }));
  });

  it.each([
    ['index 32', new Map([[32, bytes(48)]])],
    ['index -1', new Raw(encodeMap([[-1, bytes(48)]]))],
    ['a text index', new Raw(encodeMap([['0', bytes(48)]]))],
    ['a float index', new Raw(encodeMap([[new Raw(Uint8Array.of(0xf9, 0x3e, 0x00)), bytes(48)]]))],
    ['a duplicate index', new Raw(encodeMap([[0, bytes(48, 1)], [0, bytes(48, 2)]]))],
    ['a 31-byte measurement', new Map([[0, bytes(31)]])],
    ['a 33-byte measurement', new Map([[0, bytes(33)]])],
    ['a 47-byte measurement', new Map([[0, bytes(47)]])],
    ['a 49-byte measurement', new Map([[0, bytes(49)]])],
    ['a 63-byte measurement', new Map([[0, bytes(63)]])],
    ['a 65-byte measurement', new Map([[0, bytes(65)]])],
    ['an empty measurement', new Map([[0, bytes(0)]])],
    ['a text measurement', new Raw(encodeMap([[0, 'ab']]))],
    ['a second bad entry after a good one', new Raw(encodeMap([[0, bytes(48)], [1, bytes(47)]]))],
  ])('pcrs with %s', (_name, pcrs) => {
    refused(payload({ pcrs }));
  });
});

describe('parsePayload names what is wrong', () => {
  function message(input: Uint8Array): AttestationError {
    try {
      parsePayload(input);
    } catch (err) {
      expect((err as AttestationError).code).toBe('MALFORMED_PAYLOAD');
      return err as AttestationError;
    }
    return expect.unreachable('accepted');
  }

  it.each([
    ['a missing cabundle', payload({}, ['cabundle']), /cabundle is required/],
    ['a null cabundle', payload({ cabundle: null }), /cabundle is required/],
    ['a text cabundle', payload({ cabundle: 'root' }), /cabundle must be an array/],
    ['an empty cabundle', payload({ cabundle: [] }), /cabundle must hold at least one certificate/],
    ['a bad cabundle entry', payload({ cabundle: [bytes(1), bytes(0)] }), /cabundle\[1\] must be 1\.\.1024 bytes, got 0/],
    ['an integer key', encodeMap([...entries(), [1, 'x']]), /map keys must be text strings/],
    ['an unknown key', encodeMap([...entries(), ['x', 1]]), /unknown field "x"/],
    ['digest SHA256', payload({ digest: 'SHA256' }), /digest must be "SHA384", got "SHA256"/],
    ['digest 384', payload({ digest: 384 }), /digest must be "SHA384", got number/],
    ['a text PCR index', payload({ pcrs: new Raw(encodeMap([['0', bytes(48)]])) }), /pcr index "0" is not an integer in 0\.\.31/],
    ['PCR index 32', payload({ pcrs: new Map([[32, bytes(48)]]) }), /pcr index 32 is not an integer in 0\.\.31/],
    ['33 PCRs', payload({ pcrs: pcrMap(33) }), /pcrs must have 1\.\.32 entries, got 33/],
    ['a pcrs array', payload({ pcrs: [bytes(48)] }), /pcrs must be a map/],
    ['a short PCR', payload({ pcrs: new Map([[3, bytes(47)]]) }), /pcr 3 must be a 32, 48 or 64 byte string/],
    ['timestamp 0', payload({ timestamp: 0 }), /timestamp must be a positive integer/],
    ['an array payload', cbor([1]), /must be a CBOR map/],
  ])('%s', (_name, input, detail) => {
    const err = message(input);
    expect(err.message).toMatch(/^attestation payload: /);
    expect(err.message).toMatch(detail);
  });

  it('keeps the CBOR error as the cause', () => {
    const err = message(Uint8Array.of(0xa1));
    expect(err.message).toBe('attestation payload: unexpected end of CBOR data');
    expect(err.cause).toBeInstanceOf(Error);
  });
});
