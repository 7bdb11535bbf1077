import { Decoder, Encoder } from 'cbor-x';
import { CodedError } from '../../lib/coded-error.js';

/**
 * The Nitro Security Module's request/response messages: CBOR, in serde's
 * externally tagged form (see the aws-nitro-enclaves-nsm-api sources).
 */

export const MAX_REQUEST_BYTES = 4096;
export const MAX_FIELD_BYTES = 1024;

export type NsmRequest =
  | { readonly Attestation: { readonly userData: Uint8Array | null; readonly nonce: Uint8Array | null; readonly publicKey: Uint8Array | null } }
  | { readonly DescribePCR: { readonly index: number } }
  | 'GetRandom'
  | 'DescribeNSM';

export type NsmResponse =
  | { readonly kind: 'Attestation'; readonly document: Uint8Array }
  | { readonly kind: 'DescribePCR'; readonly lock: boolean; readonly data: Uint8Array }
  | { readonly kind: 'GetRandom'; readonly random: Uint8Array }
  | { readonly kind: 'DescribeNSM'; readonly info: Readonly<Record<string, unknown>> }
  | { readonly kind: 'Error'; readonly error: string };

/** Why an NSM call failed: no device here, the device said no, or the bytes made no sense. */
export type NsmErrorCode = 'NSM_UNAVAILABLE' | 'NSM_ERROR' | 'NSM_PROTOCOL' | 'NSM_INVALID_REQUEST';

export class NsmError extends CodedError<NsmErrorCode> {
  override readonly name = 'NsmError';
}

const encoder = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: true, variableMapSize: true });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

function field(value: Uint8Array | null, name: string): Buffer | null {
  if (value === null) return null;
  if (!(value instanceof Uint8Array)) throw new NsmError('NSM_INVALID_REQUEST', `${name} must be bytes or null`);
  if (value.length > MAX_FIELD_BYTES) throw new NsmError('NSM_INVALID_REQUEST', `${name} is ${value.length} bytes; the NSM takes at most ${MAX_FIELD_BYTES}`);
  return Buffer.from(value);
}

/** Encodes a request exactly as the NSM driver expects it. */
export function encodeRequest(request: NsmRequest): Uint8Array {
  let body: unknown;
  if (request === 'GetRandom' || request === 'DescribeNSM') {
    body = request;
  } else if ('Attestation' in request) {
    const a = request.Attestation;
    body = { Attestation: { user_data: field(a.userData, 'user_data'), nonce: field(a.nonce, 'nonce'), public_key: field(a.publicKey, 'public_key') } };
  } else {
    const index = request.DescribePCR.index;
    if (!Number.isInteger(index) || index < 0 || index > 0xffff) throw new NsmError('NSM_INVALID_REQUEST', 'PCR index must be a u16');
    body = { DescribePCR: { index } };
  }
  const bytes = new Uint8Array(encoder.encode(body));
  if (bytes.length > MAX_REQUEST_BYTES) throw new NsmError('NSM_INVALID_REQUEST', `request is ${bytes.length} bytes; the NSM takes at most ${MAX_REQUEST_BYTES}`);
  return bytes;
}

/** Decodes a request (the simulator's side of the wire). */
export function decodeRequest(bytes: Uint8Array): NsmRequest {
  let value: unknown;
  try {
    value = decoder.decode(bytes);
  } catch (cause) {
    throw new NsmError('NSM_PROTOCOL', 'request is not CBOR', { cause });
  }
  if (value === 'GetRandom' || value === 'DescribeNSM') return value;
  const obj = value as Record<string, Record<string, unknown>> | null;
  const bytesOrNull = (v: unknown, name: string): Uint8Array | null => {
    if (v === null || v === undefined) return null;
    if (!(v instanceof Uint8Array)) throw new NsmError('NSM_PROTOCOL', `${name} must be bytes or null`);
    return new Uint8Array(v);
  };
  if (obj && typeof obj === 'object' && obj.Attestation && typeof obj.Attestation === 'object') {
    const a = obj.Attestation;
    return { Attestation: { userData: bytesOrNull(a.user_data, 'user_data'), nonce: bytesOrNull(a.nonce, 'nonce'), publicKey: bytesOrNull(a.public_key, 'public_key') } };
  }
  if (obj && typeof obj === 'object' && obj.DescribePCR && typeof obj.DescribePCR.index === 'number') return { DescribePCR: { index: obj.DescribePCR.index } };
  throw new NsmError('NSM_PROTOCOL', 'unknown request');
}

/** Encodes a response (the simulator's side of the wire). */
export function encodeResponse(response: NsmResponse): Uint8Array {
  switch (response.kind) {
    case 'Attestation':
      return new Uint8Array(encoder.encode({ Attestation: { document: Buffer.from(response.document) } }));
    case 'DescribePCR':
      return new Uint8Array(encoder.encode({ DescribePCR: { lock: response.lock, data: Buffer.from(response.data) } }));
    case 'GetRandom':
      return new Uint8Array(encoder.encode({ GetRandom: { random: Buffer.from(response.random) } }));
    case 'DescribeNSM':
      return new Uint8Array(encoder.encode({ DescribeNSM: response.info }));
    case 'Error':
      return new Uint8Array(encoder.encode({ Error: response.error }));
  }
}

/** Decodes the device's answer; an `Error` answer becomes kind 'Error'. */
export function decodeResponse(bytes: Uint8Array): NsmResponse {
  let value: unknown;
  try {
    value = decoder.decode(bytes);
  } catch (cause) {
    throw new NsmError('NSM_PROTOCOL', 'NSM response is not CBOR', { cause });
  }
  if (typeof value !== 'object' || value === null) throw new NsmError('NSM_PROTOCOL', 'NSM response is not a map');
  const obj = value as Record<string, unknown>;
  const inner = (key: string): Record<string, unknown> => {
    const v = obj[key];
    if (typeof v !== 'object' || v === null) throw new NsmError('NSM_PROTOCOL', `NSM ${key} response is malformed`);
    return v as Record<string, unknown>;
  };
  const bytesOf = (v: unknown, what: string): Uint8Array => {
    if (!(v instanceof Uint8Array)) throw new NsmError('NSM_PROTOCOL', `NSM response ${what} is not bytes`);
    return new Uint8Array(v);
  };
  if ('Error' in obj) return { kind: 'Error', error: String(obj.Error) };
  if ('Attestation' in obj) return { kind: 'Attestation', document: bytesOf(inner('Attestation').document, 'document') };
  if ('DescribePCR' in obj) {
    const d = inner('DescribePCR');
    if (typeof d.lock !== 'boolean') throw new NsmError('NSM_PROTOCOL', 'NSM DescribePCR lock is not a boolean');
    return { kind: 'DescribePCR', lock: d.lock, data: bytesOf(d.data, 'data') };
  }
  if ('GetRandom' in obj) return { kind: 'GetRandom', random: bytesOf(inner('GetRandom').random, 'random') };
  if ('DescribeNSM' in obj) return { kind: 'DescribeNSM', info: inner('DescribeNSM') };
  throw new NsmError('NSM_PROTOCOL', `unknown NSM response ${Object.keys(obj).join(',')}`);
}
