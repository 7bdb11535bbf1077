// verifyAttestation's options and result, at their boundaries: the
// freshness window edges, nonce and PCR requirements, debug mode, roots given
// every way, invalid options (TypeError, never an AttestationError), and the
// facts returned about a verified document.
import { createHash } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { AttestationError, createVerifier, verifyAttestation, type VerifyOptions } from '../../index.js';
import { defaultPcrs, makeDocument } from '../support/document.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { codeOf } from '../support/codes.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const bytes = (n: number, fill: number): Uint8Array => new Uint8Array(n).fill(fill);

let pki: TestPki;
beforeAll(async () => {
  pki = await createTestPki(AT);
});

const opts = (extra: Partial<VerifyOptions> = {}): VerifyOptions => ({ at: AT, roots: [pki.root.pem], ...extra });

describe('the verified document', () => {
  it('carries the payload and the facts about its chain', () => {
    const nonce = bytes(32, 9);
    const document = makeDocument(pki, { nonce, userData: bytes(5, 1), publicKey: bytes(65, 4) });
    const doc = verifyAttestation(document, opts());
    expect(doc.moduleId).toBe('i-0123456789abcdef0-enc0123456789abcdef');
    expect(doc.digest).toBe('SHA384');
    expect(doc.timestamp).toBe(AT);
    expect(hex(doc.nonce!)).toBe(hex(nonce));
    expect([hex(doc.userData!), hex(doc.publicKey!)]).toEqual([hex(bytes(5, 1)), hex(bytes(65, 4))]);
    expect([...doc.pcrs.keys()]).toEqual([...defaultPcrs().keys()]);
    expect(doc.debug).toBe(false);
    expect(hex(doc.certificate)).toBe(hex(pki.leaf.der));
    expect(doc.cabundle.map(hex)).toEqual(pki.cabundle.map((c) => hex(c)));
    expect(hex(doc.signingCertificate.der)).toBe(hex(pki.leaf.der));
    expect(doc.signingCertificate.sha256).toBe(createHash('sha256').update(pki.leaf.der).digest('hex'));
    expect(doc.signingCertificate.notBefore).toEqual(pki.leaf.cert.notBefore);
    expect(doc.signingCertificate.notAfter).toEqual(pki.leaf.cert.notAfter);
    expect(doc.signingCertificate.notBefore).toBeInstanceOf(Date);
    expect(doc.rootSha256).toBe(createHash('sha256').update(pki.root.der).digest('hex'));
    expect(doc.documentSha256).toBe(createHash('sha256').update(document).digest('hex'));
  });

  it('takes the time as a Date or as epoch milliseconds', () => {
    const document = makeDocument(pki);
    expect(verifyAttestation(document, opts({ at: new Date(AT) })).timestamp).toBe(AT);
    expect(verifyAttestation(document, opts({ at: AT })).timestamp).toBe(AT);
  });
});

describe('freshness', () => {
  const at = (timestamp: number, extra: Partial<VerifyOptions>): string => codeOf(() => verifyAttestation(makeDocument(pki, { timestamp }), opts(extra)));

  it('accepts any age when maxAgeMs is not set', () => {
    expect(at(AT - 10 * 3_600_000, {})).toBe('NO_ERROR');
    expect(at(AT + 10 * 3_600_000, {})).toBe('NO_ERROR');
  });

  it('accepts exactly maxAgeMs old, not one millisecond more', () => {
    expect(at(AT - 300_000, { maxAgeMs: 300_000 })).toBe('NO_ERROR');
    expect(at(AT - 300_001, { maxAgeMs: 300_000 })).toBe('DOC_EXPIRED');
    expect(at(AT, { maxAgeMs: 0 })).toBe('NO_ERROR');
    expect(at(AT - 1, { maxAgeMs: 0 })).toBe('DOC_EXPIRED');
  });

  it('tolerates 60 s of future skew by default, and the configured skew otherwise', () => {
    expect(at(AT + 60_000, { maxAgeMs: 300_000 })).toBe('NO_ERROR');
    expect(at(AT + 60_001, { maxAgeMs: 300_000 })).toBe('DOC_EXPIRED');
    expect(at(AT + 5_000, { maxAgeMs: 300_000, clockSkewMs: 5_000 })).toBe('NO_ERROR');
    expect(at(AT + 5_001, { maxAgeMs: 300_000, clockSkewMs: 5_000 })).toBe('DOC_EXPIRED');
    expect(at(AT + 1, { maxAgeMs: 300_000, clockSkewMs: 0 })).toBe('DOC_EXPIRED');
  });
});

describe('refusals say by how much', () => {
  const message = (fn: () => unknown): string => {
    try {
      fn();
    } catch (err) {
      return (err as Error).message;
    }
    return 'accepted';
  };

  it('names the age, the future offset and the nonce problem', () => {
    expect(message(() => verifyAttestation(makeDocument(pki, { timestamp: AT - 301_000 }), opts({ maxAgeMs: 300_000 })))).toBe('document is 301000 ms old; at most 300000 ms accepted');
    expect(message(() => verifyAttestation(makeDocument(pki, { timestamp: AT + 61_000 }), opts({ maxAgeMs: 300_000 })))).toBe('document is dated 61000 ms in the future; at most 60000 ms skew accepted');
    expect(message(() => verifyAttestation(makeDocument(pki), opts({ expectedNonce: bytes(4, 1) })))).toBe('document carries no nonce');
    expect(message(() => verifyAttestation(makeDocument(pki, { nonce: bytes(4, 2) }), opts({ expectedNonce: bytes(4, 1) })))).toBe('document nonce does not match the expected nonce');
  });
});

describe('nonce', () => {
  const check = (nonce: Uint8Array | null, expectedNonce: Uint8Array | undefined): string =>
    codeOf(() => verifyAttestation(makeDocument(pki, { nonce }), opts(expectedNonce === undefined ? {} : { expectedNonce })));

  it('is checked only when expected, byte for byte', () => {
    expect(check(null, undefined)).toBe('NO_ERROR');
    expect(check(bytes(32, 1), undefined)).toBe('NO_ERROR');
    expect(check(bytes(32, 1), bytes(32, 1))).toBe('NO_ERROR');
    expect(check(new Uint8Array(), new Uint8Array())).toBe('NO_ERROR');
    expect(check(bytes(32, 1), bytes(32, 2))).toBe('NONCE_MISMATCH');
    expect(check(bytes(32, 1), bytes(31, 1))).toBe('NONCE_MISMATCH');
    expect(check(null, bytes(32, 1))).toBe('NONCE_MISMATCH');
    expect(check(null, new Uint8Array())).toBe('NONCE_MISMATCH');
  });
});

describe('required PCRs', () => {
  const check = (pcrs: VerifyOptions['pcrs'], document = makeDocument(pki)): string => codeOf(() => verifyAttestation(document, opts({ pcrs })));
  const p = defaultPcrs();

  it('match as bytes or as hex of either case', () => {
    expect(check({ 0: p.get(0)!, 1: hex(p.get(1)!), 2: hex(p.get(2)!).toUpperCase() })).toBe('NO_ERROR');
    expect(check({})).toBe('NO_ERROR');
    expect(check({ 15: p.get(15)! })).toBe('NO_ERROR');
  });

  it('a differing, shorter or absent PCR is a mismatch', () => {
    expect(check({ 0: p.get(0)!, 1: bytes(48, 0xee) })).toBe('PCR_MISMATCH');
    expect(check({ 1: hex(p.get(1)!).slice(0, -2) })).toBe('PCR_MISMATCH');
    expect(check({ 20: p.get(0)! })).toBe('PCR_MISMATCH');
    expect(check({ 31: p.get(0)! })).toBe('PCR_MISMATCH');
  });

  it.each([
    [{ [-1]: 'aa' }],
    [{ 32: 'aa' }],
    [{ 1.5: 'aa' }],
    [{ x: 'aa' }],
    [{ 0: 'abc' }],
    [{ 0: 'zz' }],
    [{ 0: 5 }],
    [{ 0: null }],
  ])('refuses the requirement %j with TypeError', (pcrs) => {
    const document = makeDocument(pki);
    expect(() => verifyAttestation(document, opts({ pcrs: pcrs as unknown as VerifyOptions['pcrs'] }))).toThrow(TypeError);
  });

  it('checks the requirement before reading the document', () => {
    for (const pcrs of [{ 0: 'zz' }, { 0: 5 }, { 32: 'aa' }]) {
      expect(() => verifyAttestation(Uint8Array.of(0x00), opts({ pcrs: pcrs as unknown as VerifyOptions['pcrs'] }))).toThrow(TypeError);
    }
    expect(() => verifyAttestation(Uint8Array.of(0x00), opts({ at: Number.NaN }))).toThrow(TypeError);
  });

  it('accepts indexes 0 and 31 as indexes', () => {
    const pcrs = new Map(defaultPcrs());
    pcrs.set(31, bytes(48, 0x31));
    const document = makeDocument(pki, { pcrs });
    expect(check({ 0: p.get(0)!, 31: bytes(48, 0x31) }, document)).toBe('NO_ERROR');
  });
});

describe('debug mode', () => {
  const withZero = (indexes: number[]): Uint8Array => {
    const pcrs = defaultPcrs();
    for (const i of indexes) pcrs.set(i, new Uint8Array(48));
    return makeDocument(pki, { pcrs });
  };

  it('is PCR0, PCR1 and PCR2 all zero, refused unless allowed', () => {
    expect(codeOf(() => verifyAttestation(withZero([0, 1, 2]), opts()))).toBe('DEBUG_MODE');
    expect(codeOf(() => verifyAttestation(withZero([0, 1, 2]), opts({ allowDebug: false })))).toBe('DEBUG_MODE');
    const doc = verifyAttestation(withZero([0, 1, 2]), opts({ allowDebug: true }));
    expect(doc.debug).toBe(true);
  });

  it.each([[[0, 1]], [[1, 2]], [[0, 2]], [[3, 4, 8]]])('is not debug when only PCRs %j are zero', (indexes) => {
    expect(verifyAttestation(withZero(indexes), opts()).debug).toBe(false);
  });

  it('is not debug when PCR2 is absent and PCR0/1 are zero', () => {
    const document = makeDocument(pki, { pcrs: new Map([[0, new Uint8Array(48)], [1, new Uint8Array(48)]]) });
    expect(verifyAttestation(document, opts()).debug).toBe(false);
  });
});

describe('roots and invalid options', () => {
  it('accepts a root as DER, as PEM among others, and remembers neither wrongly', () => {
    const verifier = createVerifier();
    const document = makeDocument(pki);
    expect(verifier(document, opts({ roots: [pki.root.der] })).rootSha256).toBe(createHash('sha256').update(pki.root.der).digest('hex'));
    expect(verifier(document, opts({ roots: [`${pki.intermediates[0]!.pem}\n${pki.root.pem}`] })).moduleId).toMatch(/^i-/);
    // Cached by content: another root set is its own answer.
    expect(codeOf(() => verifier(document, opts({ roots: [pki.intermediates[0]!.der] })))).toBe('UNTRUSTED_ROOT');
    expect(codeOf(() => verifier(document, opts({ roots: [pki.intermediates[0]!.pem] })))).toBe('UNTRUSTED_ROOT');
    expect(verifier(document, opts({ roots: [pki.intermediates[0]!.der, pki.root.der] })).moduleId).toMatch(/^i-/);
  });

  it('defaults to the AWS root only', () => {
    expect(codeOf(() => verifyAttestation(makeDocument(pki), { at: AT }))).toBe('UNTRUSTED_ROOT');
  });

  it('refuses a malformed root with a TypeError naming it, keeping the cause', () => {
    const document = makeDocument(pki);
    const bad = pki.root.der.slice(0, -1);
    let thrown: unknown;
    try {
      verifyAttestation(document, opts({ roots: [pki.root.pem, bad] }));
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect((thrown as Error).message).toMatch(/^configured root #1: /);
    expect((thrown as Error).cause).toBeInstanceOf(AttestationError);
    expect(() => verifyAttestation(document, opts({ roots: [] }))).toThrow(TypeError);
    expect(() => verifyAttestation(document, opts({ roots: ['no pem here'] }))).toThrow(TypeError);
  });

  it.each([Number.NaN, Number.POSITIVE_INFINITY, new Date(Number.NaN), '2026-01-15' as unknown as number, undefined as unknown as number])(
    'refuses the time %s with TypeError',
    (at) => {
      expect(() => verifyAttestation(makeDocument(pki), opts({ at }))).toThrow(TypeError);
    },
  );

  it('refuses a document that is not bytes with TypeError', () => {
    for (const document of ['text', null, [1, 2], Buffer.from('x').buffer]) {
      expect(() => verifyAttestation(document as unknown as Uint8Array, opts())).toThrow(TypeError);
    }
  });

  it('a verifier with a cache of 1 still verifies every document', () => {
    const verifier = createVerifier({ cacheSize: 1 });
    for (let i = 0; i < 3; i++) expect(verifier(makeDocument(pki), opts()).moduleId).toMatch(/^i-/);
    expect(() => createVerifier({ cacheSize: 0 })).toThrow(RangeError);
  });
});
