/**
 * Documents minted with a generated AWS-shaped PKI: every valid variant the
 * Nitro format allows and one or more documents for every error code.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as x509 from '@peculiar/x509';
import { createVerifier, verifyAttestation, type AttestationErrorCode, type VerifyOptions } from '../../index.js';
import { createTestPki, issue, issueLeaf, defaultSpecs, type TestPki, type Issued } from '../support/pki.js';
import {
  ES384_PROTECTED,
  Raw,
  buildDocument,
  cbor,
  defaultPcrs,
  documentSpec,
  encodeMap,
  encodePayload,
  makeDocument,
  signatureInput,
  uint,
  type DocumentSpec,
} from '../support/document.js';
import { sign } from 'node:crypto';
import { codeOf } from '../support/codes.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
const HOUR = 3_600_000;

let pki: TestPki;
let other: TestPki;

beforeAll(async () => {
  pki = await createTestPki(AT);
  other = await createTestPki(AT);
});

function opts(extra: Partial<VerifyOptions> = {}): VerifyOptions {
  return { at: AT, roots: [pki.root.pem], ...extra };
}

function bytes(n: number, fill = 7): Uint8Array {
  return new Uint8Array(n).fill(fill);
}

function pcrsOf(size: number, count = 16): Map<number, Uint8Array> {
  const m = new Map<number, Uint8Array>();
  for (let i = 0; i < count; i++) m.set(i, new Uint8Array(size).fill(i + 1));
  return m;
}

describe('valid variants', () => {
  const variants: Array<[string, () => Partial<DocumentSpec>, (doc: ReturnType<typeof verifyAttestation>) => void]> = [
    ['definite map, explicit nulls', () => ({}), (d) => expect(d.publicKey).toBeNull()],
    ['COSE tag 18', () => ({ tag18: true }), (d) => expect(d.moduleId).toMatch(/^i-/)],
    ['indefinite-length payload map', () => ({ indefiniteMap: true }), (d) => expect(d.pcrs.size).toBe(16)],
    ['optionals absent', () => ({ explicitNulls: false }), (d) => expect([d.publicKey, d.userData, d.nonce]).toEqual([null, null, null])],
    [
      '1024-byte public_key, user_data, nonce',
      () => ({ publicKey: bytes(1024, 1), userData: bytes(1024, 2), nonce: bytes(1024, 3) }),
      (d) => expect([d.publicKey!.length, d.userData!.length, d.nonce!.length]).toEqual([1024, 1024, 1024]),
    ],
    ['0-byte user_data and nonce', () => ({ userData: bytes(0), nonce: bytes(0) }), (d) => expect([d.userData!.length, d.nonce!.length]).toEqual([0, 0])],
    ['32-byte PCRs', () => ({ pcrs: pcrsOf(32) }), (d) => expect(d.pcrs.get(0)!.length).toBe(32)],
    ['64-byte PCRs', () => ({ pcrs: pcrsOf(64) }), (d) => expect(d.pcrs.get(15)!.length).toBe(64)],
    ['32 PCRs', () => ({ pcrs: pcrsOf(48, 32) }), (d) => expect(d.pcrs.get(31)!.length).toBe(48)],
    ['a single PCR', () => ({ pcrs: new Map([[0, bytes(48, 9)]]) }), (d) => expect(d.debug).toBe(false)],
    ['nil unprotected header', () => ({ unprotectedHeader: Uint8Array.of(0xf6) }), (d) => expect(d.digest).toBe('SHA384')],
    ['unprotected header with an unrelated label', () => ({ unprotectedHeader: encodeMap([[4, new Uint8Array([1])]]) }), (d) => expect(d.digest).toBe('SHA384')],
    [
      'timestamp encoded as uint64',
      () => ({ timestamp: AT }),
      (d) => expect(d.timestamp).toBe(AT),
    ],
  ];
  it.each(variants)('%s', (_name, overrides, check) => {
    const doc = verifyAttestation(makeDocument(pki, overrides()), opts());
    check(doc);
    expect(doc.rootSha256).toHaveLength(64);
    expect(doc.documentSha256).toHaveLength(64);
  });

  it('accepts a debug document only with allowDebug, and reports it', () => {
    const pcrs = defaultPcrs();
    for (const i of [0, 1, 2]) pcrs.set(i, new Uint8Array(48));
    const document = makeDocument(pki, { pcrs });
    expect(codeOf(() => verifyAttestation(document, opts()))).toBe('DEBUG_MODE');
    expect(verifyAttestation(document, opts({ allowDebug: true })).debug).toBe(true);
  });

  it('is not debug when only some of PCR0/1/2 are zero', () => {
    const pcrs = defaultPcrs();
    pcrs.set(0, new Uint8Array(48));
    pcrs.set(1, new Uint8Array(48));
    expect(verifyAttestation(makeDocument(pki, { pcrs }), opts()).debug).toBe(false);
  });

  it('accepts roots as DER and as a multi-certificate PEM', () => {
    const document = makeDocument(pki);
    expect(verifyAttestation(document, opts({ roots: [pki.root.der] })).moduleId).toMatch(/^i-/);
    expect(verifyAttestation(document, opts({ roots: [other.root.pem + pki.root.pem] })).moduleId).toMatch(/^i-/);
  });

  it('accepts a leaf without keyUsage and a leaf without basicConstraints', async () => {
    const noKu = await issueLeaf(pki, { keyUsage: undefined });
    expect(verifyAttestation(makeDocument(pki, {}, noKu), opts()).debug).toBe(false);
    const noBc = await issueLeaf(pki, { omitBasicConstraints: true });
    expect(verifyAttestation(makeDocument(pki, {}, noBc), opts()).debug).toBe(false);
  });

  it('returns copies that do not alias the input buffer', () => {
    const document = makeDocument(pki, { nonce: bytes(32, 5) });
    const doc = verifyAttestation(document, opts());
    document.fill(0);
    expect(doc.nonce).toEqual(bytes(32, 5));
  });
});

type Extra = Partial<VerifyOptions> | (() => Partial<VerifyOptions>);
/** A document, or a document under its own PKI (whose root the case then pins). */
type Built = Uint8Array | { document: Uint8Array; pki: TestPki };
type Case = [name: string, code: AttestationErrorCode, build: () => Built | Promise<Built>, extra?: Extra];

/** Mints a PKI with one level changed and a document under it. */
async function tweaked(tweaks: Parameters<typeof createTestPki>[1]): Promise<Built> {
  const p = await createTestPki(AT, tweaks);
  return { document: makeDocument(p), pki: p };
}

function cose(parts: Uint8Array[], prefix: Uint8Array = new Uint8Array()): Uint8Array {
  return Buffer.concat([prefix, ...parts]);
}

function coseOf(document: Uint8Array): { prot: Uint8Array; unprot: Uint8Array; payload: Uint8Array; sig: Uint8Array } {
  // Split a default (untagged) document built by makeDocument back into its encoded items.
  const items: Uint8Array[] = [];
  let pos = 1;
  for (let i = 0; i < 4; i++) {
    const b = document[pos]!;
    let len: number;
    let headLen: number;
    if (i === 1) {
      len = 0;
      headLen = 1; // the default unprotected header is the one-byte empty map
    } else if ((b & 0x1f) < 24) {
      len = b & 0x1f;
      headLen = 1;
    } else if ((b & 0x1f) === 24) {
      len = document[pos + 1]!;
      headLen = 2;
    } else {
      len = (document[pos + 1]! << 8) | document[pos + 2]!;
      headLen = 3;
    }
    items.push(document.subarray(pos, pos + headLen + len));
    pos += headLen + len;
  }
  return { prot: items[0]!, unprot: items[1]!, payload: items[2]!, sig: items[3]! };
}

const malformedCose: Case[] = [
  ['empty input', 'MALFORMED_COSE', () => new Uint8Array()],
  ['a CBOR map instead of an array', 'MALFORMED_COSE', () => cbor(new Map([[1, 2]]))],
  ['array of 3', 'MALFORMED_COSE', () => { const d = makeDocument(pki); const c = coseOf(d); return cose([Uint8Array.of(0x83), c.prot, c.unprot, c.payload]); }],
  ['array of 5', 'MALFORMED_COSE', () => { const c = coseOf(makeDocument(pki)); return cose([Uint8Array.of(0x85), c.prot, c.unprot, c.payload, c.sig, Uint8Array.of(0x40)]); }],
  ['indefinite-length array', 'MALFORMED_COSE', () => { const c = coseOf(makeDocument(pki)); return cose([Uint8Array.of(0x9f), c.prot, c.unprot, c.payload, c.sig, Uint8Array.of(0xff)]); }],
  ['a trailing byte', 'MALFORMED_COSE', () => cose([makeDocument(pki), Uint8Array.of(0x00)])],
  ['truncated by one byte', 'MALFORMED_COSE', () => makeDocument(pki).subarray(0, -1)],
  ['tag 17 (COSE_Mac0)', 'MALFORMED_COSE', () => cose([makeDocument(pki)], Uint8Array.of(0xd1))],
  ['two tags', 'MALFORMED_COSE', () => cose([makeDocument(pki, { tag18: true })], Uint8Array.of(0xd2))],
  ['protected header as text', 'MALFORMED_COSE', () => { const c = coseOf(makeDocument(pki)); return cose([Uint8Array.of(0x84), cbor('a'), c.unprot, c.payload, c.sig]); }],
  ['unprotected header as array', 'MALFORMED_COSE', () => makeDocument(pki, { unprotectedHeader: Uint8Array.of(0x80) })],
  ['unprotected header carries alg', 'MALFORMED_COSE', () => makeDocument(pki, { unprotectedHeader: encodeMap([[1, -35]]) })],
  ['unprotected header carries crit', 'MALFORMED_COSE', () => makeDocument(pki, { unprotectedHeader: encodeMap([[2, [1]]]) })],
  ['protected header with an extra parameter', 'MALFORMED_COSE', () => makeDocument(pki, { protectedHeader: encodeMap([[1, -35], [4, new Uint8Array([1])]]) })],
  ['protected header with a duplicate alg', 'MALFORMED_COSE', () => makeDocument(pki, { protectedHeader: encodeMap([[1, -35], [1, -35]]) })],
  ['protected header that is not CBOR', 'MALFORMED_COSE', () => makeDocument(pki, { protectedHeader: Uint8Array.of(0xa1, 0x01) })],
  ['empty payload', 'MALFORMED_COSE', () => { const c = coseOf(makeDocument(pki)); return cose([Uint8Array.of(0x84), c.prot, c.unprot, Uint8Array.of(0x40), c.sig]); }],
  ['nil payload', 'MALFORMED_COSE', () => { const c = coseOf(makeDocument(pki)); return cose([Uint8Array.of(0x84), c.prot, c.unprot, Uint8Array.of(0xf6), c.sig]); }],
  ['64-byte signature', 'MALFORMED_COSE', () => makeDocument(pki, { mutateSignature: (s) => s.subarray(0, 64) })],
  ['97-byte signature', 'MALFORMED_COSE', () => makeDocument(pki, { mutateSignature: (s) => Buffer.concat([s, Uint8Array.of(0)]) })],
  ['DER signature instead of raw r||s', 'MALFORMED_COSE', () => makeDocument(pki, { mutateSignature: (s) => Buffer.concat([Uint8Array.of(0x30, 0x62, 0x02, 0x30), s.subarray(0, 48), Uint8Array.of(0x02, 0x30), s.subarray(48)]) })],
];

const unsupportedAlg: Case[] = [
  ['ES256 (-7)', 'UNSUPPORTED_ALG', () => makeDocument(pki, { protectedHeader: cbor(new Map([[1, -7]])) })],
  ['ES512 (-36)', 'UNSUPPORTED_ALG', () => makeDocument(pki, { protectedHeader: cbor(new Map([[1, -36]])) })],
  ['alg given as text', 'UNSUPPORTED_ALG', () => makeDocument(pki, { protectedHeader: cbor(new Map([[1, 'ES384']])) })],
  ['no alg (empty map)', 'UNSUPPORTED_ALG', () => makeDocument(pki, { protectedHeader: Uint8Array.of(0xa0) })],
  ['empty protected header', 'UNSUPPORTED_ALG', () => makeDocument(pki, { protectedHeader: new Uint8Array() })],
];

function withEntries(entries: ReadonlyArray<readonly [unknown, unknown]>, indefinite = false): Partial<DocumentSpec> {
  return { payloadBytes: encodeMap(entries, indefinite) };
}

function standardEntries(replace: Record<string, unknown> = {}, drop: string[] = []): Array<readonly [unknown, unknown]> {
  const base: Record<string, unknown> = {
    module_id: 'i-0123456789abcdef0-enc0123456789abcdef',
    digest: 'SHA384',
    timestamp: uint(AT),
    pcrs: new Map([...defaultPcrs()].map(([k, v]) => [k, Buffer.from(v)])),
    certificate: Buffer.from(pki.leaf.der),
    cabundle: pki.cabundle.map((c) => Buffer.from(c)),
    public_key: null,
    user_data: null,
    nonce: null,
    ...replace,
  };
  return Object.entries(base).filter(([k]) => !drop.includes(k));
}

const malformedPayload: Case[] = [
  ['payload is an array', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { payloadBytes: cbor([1, 2]) })],
  ['payload is not CBOR', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { payloadBytes: Uint8Array.of(0xa1) })],
  ['payload has trailing bytes', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { payloadBytes: Buffer.concat([encodeMap(standardEntries()), Uint8Array.of(0)]) })],
  ['duplicate module_id', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries([...standardEntries(), ['module_id', 'i-0-enc0']]))],
  ['duplicate key in an indefinite map', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries([...standardEntries(), ['nonce', null]], true))],
  ['duplicate PCR index', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Raw(encodeMap([[0, Buffer.alloc(48, 1)], [0, Buffer.alloc(48, 2)]])) })],
  ['unknown field', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { extraEntries: [['enclave_name', 'x']] })],
  ['integer key', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { extraEntries: [[1, 'x']] })],
  ['missing module_id', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({}, ['module_id'])))],
  ['empty module_id', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { moduleId: '' })],
  ['module_id as bytes', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ module_id: Buffer.from('i-1') })))],
  ['invalid UTF-8 in module_id', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ module_id: new Raw(Uint8Array.of(0x62, 0xc3, 0x28)) })))],
  ['digest SHA256', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { digest: 'SHA256' })],
  ['digest as integer', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { digest: 384 })],
  ['digest as a large integer', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { digest: new Raw(Uint8Array.of(0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)) })],
  ['missing timestamp', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({}, ['timestamp'])))],
  ['negative timestamp', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { timestamp: -5 })],
  ['zero timestamp', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { timestamp: 0 })],
  ['float timestamp', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ timestamp: new Raw(Uint8Array.of(0xfb, 0x42, 0x77, 0x9c, 0x8e, 0x5f, 0x80, 0x00, 0x00)) })))],
  ['timestamp beyond 2^53', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ timestamp: new Raw(Uint8Array.of(0x1b, 0x00, 0x40, 0, 0, 0, 0, 0, 0)) })))],
  ['timestamp as text', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ timestamp: String(AT) })))],
  ['pcrs empty', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Map() })],
  ['33 pcrs', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Raw(encodeMap([...pcrsOf(48, 32)].map(([k, v]) => [k, Buffer.from(v)] as const).concat([[-1, Buffer.alloc(48)]]))) })],
  ['pcr index 32', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Map([[32, bytes(48)]]) })],
  ['negative pcr index', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Raw(encodeMap([[-1, Buffer.alloc(48)]])) })],
  ['text pcr index', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Raw(encodeMap([['0', Buffer.alloc(48)]])) })],
  ['47-byte pcr', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Map([[0, bytes(47)]]) })],
  ['pcr as text', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Raw(encodeMap([[0, 'ab']])) })],
  ['pcrs as an array', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { pcrs: new Raw(cbor([Buffer.alloc(48)])) })],
  ['missing certificate', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({}, ['certificate'])))],
  ['empty certificate', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { certificate: new Uint8Array() })],
  ['1025-byte certificate', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { certificate: bytes(1025) })],
  ['cabundle as text', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { cabundle: new Raw(cbor('root')) })],
  ['cabundle with an integer', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { cabundle: new Raw(cbor([Buffer.from(pki.root.der), 5])) })],
  ['cabundle entry of 1025 bytes', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { cabundle: [pki.root.der, bytes(1025)] })],
  ['empty cabundle entry', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { cabundle: [pki.root.der, new Uint8Array()] })],
  // nsm-api: cabundle is required and holds 1..N certificates.
  ['no cabundle', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { cabundle: null })],
  ['cabundle null', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { cabundle: new Raw(Uint8Array.of(0xf6)) })],
  ['empty cabundle', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { cabundle: [] })],
  ['0-byte public_key', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { publicKey: new Uint8Array() })],
  ['1025-byte public_key', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { publicKey: bytes(1025) })],
  ['1025-byte user_data', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { userData: bytes(1025) })],
  ['1025-byte nonce', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { nonce: bytes(1025) })],
  ['nonce as text', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ nonce: 'abc' })))],
  ['nonce as boolean', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ nonce: false })))],
  ['undefined value', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ nonce: new Raw(Uint8Array.of(0xf7)) })))],
  ['tagged value', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ nonce: new Raw(Uint8Array.of(0xc2, 0x41, 0x01)) })))],
  ['indefinite-length byte string', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ nonce: new Raw(Uint8Array.of(0x5f, 0x41, 0x01, 0xff)) })))],
  ['unterminated indefinite map', 'MALFORMED_PAYLOAD', () => makeDocument(pki, { payloadBytes: encodeMap(standardEntries(), true).subarray(0, -1) })],
  ['deeply nested value', 'MALFORMED_PAYLOAD', () => makeDocument(pki, withEntries(standardEntries({ nonce: new Raw(Buffer.concat([Buffer.alloc(40, 0x81), Uint8Array.of(0x00)])) })))],
];

const chainInvalid: Case[] = [
  ['intermediate without cA', 'CERT_CHAIN_INVALID', () => tweaked({ zonal: { ca: false, pathLen: undefined } })],
  ['intermediate without keyCertSign', 'CERT_CHAIN_INVALID', () => tweaked({ zonal: { keyUsage: x509.KeyUsageFlags.digitalSignature } })],
  ['intermediate without keyUsage', 'CERT_CHAIN_INVALID', () => tweaked({ instance: { keyUsage: undefined } })],
  ['pathLen exceeded', 'CERT_CHAIN_INVALID', () => tweaked({ regional: { pathLen: 0 } })],
  ['leaf is a CA', 'CERT_CHAIN_INVALID', async () => makeDocument(pki, {}, await issueLeaf(pki, { ca: true }))],
  ['leaf keyUsage lacks digitalSignature', 'CERT_CHAIN_INVALID', async () => makeDocument(pki, {}, await issueLeaf(pki, { keyUsage: x509.KeyUsageFlags.keyEncipherment }))],
  ['leaf signed with ecdsa-with-SHA256', 'CERT_CHAIN_INVALID', async () => makeDocument(pki, {}, await issueLeaf(pki, { signingHash: 'SHA-256' }))],
  // P-256 signatures are 64 bytes; padded to 96 so the document gets past the shape check to the chain.
  ['leaf with a P-256 key', 'CERT_CHAIN_INVALID', async () => makeDocument(pki, { mutateSignature: (sig) => Buffer.concat([sig, new Uint8Array(32)]) }, await issueLeaf(pki, { curve: 'P-256' }))],
  ['unknown critical extension', 'CERT_CHAIN_INVALID', async () => makeDocument(pki, {}, await issueLeaf(pki, { extraExtensions: [new x509.Extension('1.3.6.1.4.1.99999.1', true, new Uint8Array([0x05, 0x00]))] }))],
  ['leaf issued by another PKI', 'CERT_CHAIN_INVALID', () => makeDocument(pki, {}, other.leaf)],
  ['intermediates from another PKI', 'CERT_CHAIN_INVALID', () => makeDocument(pki, { cabundle: [pki.root.der, ...other.cabundle.slice(1)] })],
  ['cabundle out of order', 'CERT_CHAIN_INVALID', () => makeDocument(pki, { cabundle: [pki.cabundle[0]!, pki.cabundle[2]!, pki.cabundle[1]!, pki.cabundle[3]!] })],
  ['missing intermediate', 'CERT_CHAIN_INVALID', () => makeDocument(pki, { cabundle: [pki.cabundle[0]!, pki.cabundle[1]!, pki.cabundle[3]!] })],
  ['garbage certificate', 'CERT_CHAIN_INVALID', () => makeDocument(pki, { certificate: bytes(600, 0x30) })],
  ['garbage intermediate', 'CERT_CHAIN_INVALID', () => makeDocument(pki, { cabundle: [pki.root.der, bytes(300, 0x30), ...pki.cabundle.slice(2)] })],
  ['nine-certificate bundle', 'CERT_CHAIN_INVALID', () => makeDocument(pki, { cabundle: [...pki.cabundle, ...pki.cabundle, pki.root.der] })],
  ['intermediate signature altered', 'CERT_CHAIN_INVALID', () => { const z = pki.cabundle[2]!.slice(); z[z.length - 3]! ^= 1; return makeDocument(pki, { cabundle: [pki.cabundle[0]!, pki.cabundle[1]!, z, pki.cabundle[3]!] }); }],
  ['leaf TBS altered', 'CERT_CHAIN_INVALID', () => { const l = pki.leaf.der.slice(); l[40]! ^= 1; return makeDocument(pki, { certificate: l }); }],
  ['cabundle[0] is the pinned root but the chain is not under it', 'CERT_CHAIN_INVALID', () => makeDocument(pki, { cabundle: [pki.root.der, ...other.cabundle.slice(1)] }, other.leaf)],
];

const untrusted: Case[] = [
  ['test PKI under the default AWS root', 'UNTRUSTED_ROOT', () => makeDocument(pki), { roots: undefined }],
  ['cabundle[0] is a foreign root', 'UNTRUSTED_ROOT', () => makeDocument(other)],
  ['cabundle[0] is not the pinned certificate even though a later one is', 'UNTRUSTED_ROOT', () => makeDocument(pki), () => ({ roots: [pki.intermediates[0]!.pem] })],
];

const expired: Case[] = [
  ['after the leaf expires', 'CERT_EXPIRED', () => makeDocument(pki), { at: AT + 3 * HOUR }],
  ['before the leaf is valid', 'CERT_EXPIRED', () => makeDocument(pki), { at: AT - 10_000 }],
  ['expired intermediate', 'CERT_EXPIRED', () => tweaked({ zonal: { notAfter: AT - 1 } })],
  ['root not yet valid', 'CERT_EXPIRED', () => tweaked({ root: { notBefore: AT + 1_000 } })],
];

const badSignature: Case[] = [
  ['one bit of the signature flipped', 'BAD_SIGNATURE', () => makeDocument(pki, { mutateSignature: (s) => { const c = s.slice(); c[10]! ^= 1; return c; } })],
  ['all-zero signature', 'BAD_SIGNATURE', () => makeDocument(pki, { mutateSignature: (s) => new Uint8Array(s.length) })],
  ['signed by another enclave key', 'BAD_SIGNATURE', () => makeDocument(pki, { signer: other.leaf.privateKey })],
  ['signed by the instance CA instead of the leaf', 'BAD_SIGNATURE', () => makeDocument(pki, { signer: pki.intermediates[2]!.privateKey })],
  ['signature made over another encoding of the same protected header', 'BAD_SIGNATURE', () => {
    // {1: -35} with the key written non-minimally: same meaning, different bytes. The signature
    // covers the canonical bytes, so a verifier that re-encoded the header would wrongly accept.
    const spec = documentSpec(pki, { protectedHeader: Uint8Array.of(0xa1, 0x18, 0x01, 0x38, 0x22) });
    const canonicalSig = sign('sha384', signatureInput(ES384_PROTECTED, encodePayload(spec)), { key: pki.leaf.privateKey, dsaEncoding: 'ieee-p1363' });
    return buildDocument({ ...spec, mutateSignature: () => new Uint8Array(canonicalSig) });
  }],
];

const requested: Case[] = [
  ['document older than max age', 'DOC_EXPIRED', () => makeDocument(pki, { timestamp: AT - 301_000 }), { maxAgeMs: 300_000 }],
  ['document from the future', 'DOC_EXPIRED', () => makeDocument(pki, { timestamp: AT + 61_000 }), { maxAgeMs: 300_000 }],
  ['nonce differs', 'NONCE_MISMATCH', () => makeDocument(pki, { nonce: bytes(32, 1) }), { expectedNonce: bytes(32, 2) }],
  ['nonce absent', 'NONCE_MISMATCH', () => makeDocument(pki), { expectedNonce: bytes(32, 2) }],
  ['empty nonce when one is expected', 'NONCE_MISMATCH', () => makeDocument(pki, { nonce: new Uint8Array() }), { expectedNonce: bytes(32, 2) }],
  ['PCR0 differs', 'PCR_MISMATCH', () => makeDocument(pki), { pcrs: { 0: bytes(48, 0xee) } }],
  ['PCR8 required but absent', 'PCR_MISMATCH', () => makeDocument(pki, { pcrs: new Map([[0, bytes(48, 1)]]) }), { pcrs: { 8: bytes(48, 0) } }],
  ['PCR of another length', 'PCR_MISMATCH', () => makeDocument(pki), { pcrs: { 0: defaultPcrs().get(0)!.subarray(0, 32) } }],
  ['debug enclave', 'DEBUG_MODE', () => { const p = defaultPcrs(); [0, 1, 2].forEach((i) => p.set(i, new Uint8Array(48))); return makeDocument(pki, { pcrs: p }); }],
];

describe.each([
  ['MALFORMED_COSE', malformedCose],
  ['UNSUPPORTED_ALG', unsupportedAlg],
  ['MALFORMED_PAYLOAD', malformedPayload],
  ['CERT_CHAIN_INVALID', chainInvalid],
  ['UNTRUSTED_ROOT', untrusted],
  ['CERT_EXPIRED', expired],
  ['BAD_SIGNATURE', badSignature],
  ['DOC_EXPIRED, NONCE_MISMATCH, PCR_MISMATCH, DEBUG_MODE', requested],
] as const)('%s', (_group, cases) => {
  it.each(cases)('%s -> %s', async (_name, code, build, extra) => {
    const built = await build();
    const document = built instanceof Uint8Array ? built : built.document;
    const roots = built instanceof Uint8Array ? {} : { roots: [built.pki.root.pem] };
    const options = opts({ ...roots, ...(typeof extra === 'function' ? extra() : extra) });
    expect(codeOf(() => verifyAttestation(document, options))).toBe(code);
  });
});

describe('certificate cache', () => {
  it('still checks validity at every call for cached certificates', async () => {
    const p = await createTestPki(AT, { instance: { notAfter: AT + HOUR } });
    const verifier = createVerifier();
    const first = makeDocument(p);
    expect(verifier(first, opts({ roots: [p.root.pem] })).moduleId).toMatch(/^i-/);
    // Same cached chain, later time: the instance CA has expired even though the leaf has not.
    const leaf = await issueLeaf(p, { notBefore: AT + 30 * 60_000, notAfter: AT + 4 * HOUR });
    const later = makeDocument(p, { timestamp: AT + 2 * HOUR }, leaf);
    expect(codeOf(() => verifier(later, opts({ roots: [p.root.pem], at: AT + 2 * HOUR })))).toBe('CERT_EXPIRED');
  });

  it('does not accept a cached certificate under a different issuer with the same name', async () => {
    const verifier = createVerifier();
    const twinRoot = await issue(defaultSpecs(AT).root); // same subject name as pki.root, different key
    expect(verifier(makeDocument(pki), opts({ roots: [pki.root.pem, twinRoot.pem] })).moduleId).toMatch(/^i-/);
    const swapped = makeDocument(pki, { cabundle: [twinRoot.der, ...pki.cabundle.slice(1)] });
    expect(codeOf(() => verifier(swapped, opts({ roots: [pki.root.pem, twinRoot.pem] })))).toBe('CERT_CHAIN_INVALID');
  });

  it('stays correct with a tiny cache under churn', async () => {
    const verifier = createVerifier({ cacheSize: 2 });
    const leaves: Issued[] = [];
    for (let i = 0; i < 4; i++) leaves.push(await issueLeaf(pki));
    for (let round = 0; round < 3; round++) {
      for (const leaf of leaves) expect(verifier(makeDocument(pki, {}, leaf), opts()).moduleId).toMatch(/^i-/);
    }
    expect(codeOf(() => verifier(makeDocument(pki, { signer: other.leaf.privateKey }, leaves[0]), opts()))).toBe('BAD_SIGNATURE');
  });
});

describe('options', () => {
  it('rejects invalid options with TypeError', () => {
    const document = makeDocument(pki);
    expect(() => verifyAttestation(document, { at: Number.NaN })).toThrow(TypeError);
    expect(() => verifyAttestation(document, opts({ pcrs: { 0: 'xyz' } }))).toThrow(TypeError);
    expect(() => verifyAttestation(document, opts({ pcrs: { 40: 'aa' } }))).toThrow(TypeError);
    expect(() => verifyAttestation(document, opts({ roots: [] }))).toThrow(TypeError);
    expect(() => verifyAttestation(document, opts({ roots: ['not a pem'] }))).toThrow(TypeError);
    expect(() => verifyAttestation('text' as unknown as Uint8Array, opts())).toThrow(TypeError);
  });
});
