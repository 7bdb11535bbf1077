/**
 * Builds COSE_Sign1 attestation documents the way the Nitro Secure Module
 * does, signed by a test PKI. Encoding is assembled piece by piece so tests
 * can produce what no well-behaved encoder would: indefinite maps, duplicate
 * keys, explicit nulls, extra fields, wrong types.
 */
import { sign, type KeyObject } from 'node:crypto';
import { Encoder } from 'cbor-x';
import type { Issued, TestPki } from './pki.js';

const encoder = new Encoder({ tagUint8Array: false, useRecords: false, mapsAsObjects: false });

/** CBOR of one value (Uint8Array becomes a plain byte string). */
export function cbor(value: unknown): Uint8Array {
  return new Uint8Array(encoder.encode(value));
}

/** A pre-encoded CBOR item, inserted verbatim. */
export class Raw {
  constructor(readonly bytes: Uint8Array) {}
}

function enc(value: unknown): Uint8Array {
  return value instanceof Raw ? value.bytes : cbor(value instanceof Uint8Array ? Buffer.from(value) : value);
}

function head(major: number, length: number): Uint8Array {
  if (length < 24) return Uint8Array.of((major << 5) | length);
  if (length < 0x100) return Uint8Array.of((major << 5) | 24, length);
  return Uint8Array.of((major << 5) | 25, length >> 8, length & 0xff);
}

/**
 * CBOR unsigned integer in its shortest form. cbor-x writes integers above
 * 2^32 as float64, which is not what the NSM sends for timestamps.
 */
export function uint(n: number): Raw {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError('uint() takes a non-negative safe integer');
  if (n < 2 ** 32) return new Raw(cbor(n));
  const out = new Uint8Array(9);
  out[0] = 0x1b;
  new DataView(out.buffer).setBigUint64(1, BigInt(n));
  return new Raw(out);
}

/** A CBOR map from entries (duplicates allowed), definite or indefinite. */
export function encodeMap(entries: ReadonlyArray<readonly [unknown, unknown]>, indefinite = false): Uint8Array {
  const parts: Uint8Array[] = [indefinite ? Uint8Array.of(0xbf) : head(5, entries.length)];
  for (const [k, v] of entries) parts.push(enc(k), enc(v));
  if (indefinite) parts.push(Uint8Array.of(0xff));
  return Buffer.concat(parts);
}

/** A CBOR byte string around `bytes`. */
export function encodeBytes(bytes: Uint8Array): Uint8Array {
  return Buffer.concat([head(2, bytes.length), bytes]);
}

export const PCR_ZERO = new Uint8Array(48);

/** Default PCR set: 16 PCRs of 48 bytes, PCR0/1/2 non-zero (a production enclave). */
export function defaultPcrs(seed = 1): Map<number, Uint8Array> {
  const pcrs = new Map<number, Uint8Array>();
  for (let i = 0; i < 16; i++) pcrs.set(i, i <= 4 ? new Uint8Array(48).fill((seed * 16 + i + 1) & 0xff) : new Uint8Array(48));
  return pcrs;
}

export interface DocumentSpec {
  moduleId: string;
  timestamp: number;
  digest: unknown;
  pcrs: Map<number, Uint8Array> | Raw;
  certificate: Uint8Array | Raw;
  cabundle: readonly Uint8Array[] | Raw | null;
  publicKey: Uint8Array | null | undefined;
  userData: Uint8Array | null | undefined;
  nonce: Uint8Array | null | undefined;
  /** Optional fields equal to null are written as explicit CBOR null (else omitted). */
  explicitNulls: boolean;
  indefiniteMap: boolean;
  tag18: boolean;
  /** Extra raw payload entries appended after the standard ones. */
  extraEntries: ReadonlyArray<readonly [unknown, unknown]>;
  /** Replaces the standard payload bytes entirely. */
  payloadBytes?: Uint8Array;
  protectedHeader: Uint8Array;
  unprotectedHeader: Uint8Array;
  /** Key that signs the COSE structure (default: the PKI leaf). */
  signer: KeyObject;
  /** Applied to the signature before it is encoded. */
  mutateSignature?: (sig: Uint8Array) => Uint8Array;
}

export const ES384_PROTECTED = cbor(new Map([[1, -35]]));

/** The payload bytes for a spec. */
export function encodePayload(spec: DocumentSpec): Uint8Array {
  if (spec.payloadBytes) return spec.payloadBytes;
  const entries: Array<readonly [unknown, unknown]> = [
    ['module_id', spec.moduleId],
    ['digest', spec.digest],
    ['timestamp', Number.isSafeInteger(spec.timestamp) && spec.timestamp >= 0 ? uint(spec.timestamp) : spec.timestamp],
    ['pcrs', spec.pcrs instanceof Raw ? spec.pcrs : new Map([...spec.pcrs].map(([k, v]) => [k, Buffer.from(v)]))],
    ['certificate', spec.certificate],
  ];
  if (spec.cabundle !== null) {
    entries.push(['cabundle', spec.cabundle instanceof Raw ? spec.cabundle : spec.cabundle.map((c) => Buffer.from(c))]);
  }
  for (const [key, value] of [
    ['public_key', spec.publicKey],
    ['user_data', spec.userData],
    ['nonce', spec.nonce],
  ] as const) {
    if (value !== null && value !== undefined) entries.push([key, value]);
    else if (value === null && spec.explicitNulls) entries.push([key, null]);
  }
  entries.push(...spec.extraEntries);
  return encodeMap(entries, spec.indefiniteMap);
}

/** Independent Sig_structure encoding (cbor-x), so the verifier's own helper is not trusted by its tests. */
export function signatureInput(protectedHeader: Uint8Array, payload: Uint8Array): Uint8Array {
  return cbor(['Signature1', Buffer.from(protectedHeader), Buffer.alloc(0), Buffer.from(payload)]);
}

/** Encodes and signs a document. */
export function buildDocument(spec: DocumentSpec): Uint8Array {
  const payload = encodePayload(spec);
  let signature: Uint8Array = new Uint8Array(
    sign('sha384', signatureInput(spec.protectedHeader, payload), { key: spec.signer, dsaEncoding: 'ieee-p1363' }),
  );
  if (spec.mutateSignature) signature = spec.mutateSignature(signature);
  const body = Buffer.concat([
    Uint8Array.of(0x84),
    encodeBytes(spec.protectedHeader),
    spec.unprotectedHeader,
    encodeBytes(payload),
    encodeBytes(signature),
  ]);
  return spec.tag18 ? Buffer.concat([Uint8Array.of(0xd2), body]) : new Uint8Array(body);
}

/** A spec for a valid production document under `pki`, with overrides. */
export function documentSpec(pki: TestPki, overrides: Partial<DocumentSpec> = {}, leaf: Issued = pki.leaf): DocumentSpec {
  return {
    moduleId: 'i-0123456789abcdef0-enc0123456789abcdef',
    timestamp: pki.at,
    digest: 'SHA384',
    pcrs: defaultPcrs(),
    certificate: leaf.der,
    cabundle: pki.cabundle,
    publicKey: null,
    userData: null,
    nonce: null,
    explicitNulls: true,
    indefiniteMap: false,
    tag18: false,
    extraEntries: [],
    protectedHeader: ES384_PROTECTED,
    unprotectedHeader: Uint8Array.of(0xa0),
    signer: leaf.privateKey,
    ...overrides,
  };
}

/** Shorthand: build a document under `pki` with overrides. */
export function makeDocument(pki: TestPki, overrides: Partial<DocumentSpec> = {}, leaf?: Issued): Uint8Array {
  return buildDocument(documentSpec(pki, overrides, leaf));
}
