import { AttestationError } from './errors.js';
import { CborShapeError } from './cbor-strict.js';
import { decodeStrictViews } from './cbor-decode.js';

/**
 * The attestation document as AWS's nsm-api defines it
 * (attestation_process.md). Optional fields absent from the document and
 * optional fields sent as explicit CBOR null are both `null` here.
 */
export interface AttestationPayload {
  readonly moduleId: string;
  readonly digest: 'SHA384';
  /** Milliseconds since the Unix epoch, as the NSM stamped it. */
  readonly timestamp: number;
  /** PCR index -> measurement (32, 48 or 64 bytes). */
  readonly pcrs: ReadonlyMap<number, Uint8Array>;
  /** DER of the signing (leaf) certificate. */
  readonly certificate: Uint8Array;
  /** DER certificates, root first, issuer of `certificate` last; never empty. */
  readonly cabundle: readonly Uint8Array[];
  readonly publicKey: Uint8Array | null;
  readonly userData: Uint8Array | null;
  readonly nonce: Uint8Array | null;
}

const MAX_PCRS = 32;
const PCR_LENGTHS = new Set([32, 48, 64]);
const MAX_FIELD = 1024;
const KNOWN_KEYS = new Set([
  'module_id',
  'digest',
  'timestamp',
  'pcrs',
  'certificate',
  'cabundle',
  'public_key',
  'user_data',
  'nonce',
]);

function invalid(message: string, cause?: unknown): AttestationError {
  return new AttestationError('MALFORMED_PAYLOAD', `attestation payload: ${message}`, { cause });
}

function isBytes(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array;
}

function boundedBytes(value: unknown, field: string, min: number, max: number): Uint8Array {
  if (!isBytes(value)) throw invalid(`${field} must be a byte string`);
  if (value.length < min || value.length > max) {
    throw invalid(`${field} must be ${min}..${max} bytes, got ${value.length}`);
  }
  return value;
}

function optionalBytes(map: Map<unknown, unknown>, field: string, min: number): Uint8Array | null {
  const value = map.get(field);
  if (value === undefined || value === null) return null;
  return boundedBytes(value, field, min, MAX_FIELD);
}

function parseTimestamp(value: unknown): number {
  const n = typeof value === 'bigint' && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n <= 0) {
    throw invalid('timestamp must be a positive integer number of milliseconds');
  }
  return n;
}

function parsePcrs(value: unknown): Map<number, Uint8Array> {
  if (!(value instanceof Map)) throw invalid('pcrs must be a map');
  if (value.size < 1 || value.size > MAX_PCRS) throw invalid(`pcrs must have 1..${MAX_PCRS} entries, got ${value.size}`);
  const pcrs = new Map<number, Uint8Array>();
  for (const [index, measurement] of value) {
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0 || index >= MAX_PCRS) {
      throw invalid(`pcr index ${typeof index === 'string' ? JSON.stringify(index) : String(index)} is not an integer in 0..${MAX_PCRS - 1}`);
    }
    if (!isBytes(measurement) || !PCR_LENGTHS.has(measurement.length)) {
      throw invalid(`pcr ${index} must be a 32, 48 or 64 byte string`);
    }
    pcrs.set(index, measurement);
  }
  return pcrs;
}

/**
 * nsm-api defines cabundle as required, holding 1..N DER certificates (root
 * first). A document without one (absent, null or []) breaks that schema, so it
 * is malformed, not merely untrusted.
 */
function parseCabundle(value: unknown): Uint8Array[] {
  if (value === undefined || value === null) throw invalid('cabundle is required (1..N certificates)');
  if (!Array.isArray(value)) throw invalid('cabundle must be an array of byte strings');
  if (value.length === 0) throw invalid('cabundle must hold at least one certificate');
  return value.map((cert, i) => boundedBytes(cert, `cabundle[${i}]`, 1, MAX_FIELD));
}

/**
 * Decodes and schema-checks the COSE payload. Shape only: nothing here says
 * the document is genuine. Byte strings returned are plain Uint8Arrays over
 * a private copy of `bytes`: nothing aliases the caller's buffer.
 *
 * @throws AttestationError MALFORMED_PAYLOAD
 */
export function parsePayload(bytes: Uint8Array): AttestationPayload {
  return parseOwnedPayload(new Uint8Array(bytes));
}

/**
 * {@link parsePayload} for a plain Uint8Array the caller owns and never changes (parseCoseSign1's
 * payload copy): every byte string returned is a view into it. One copy per document instead of one
 * buffer per field, each of which costs an allocation and garbage-collector work.
 */
export function parseOwnedPayload(bytes: Uint8Array): AttestationPayload {
  let decoded: unknown;
  try {
    decoded = decodeStrictViews(bytes);
  } catch (cause) {
    const detail = cause instanceof CborShapeError ? cause.message : 'not valid CBOR';
    throw invalid(detail, cause);
  }
  if (!(decoded instanceof Map)) throw invalid('must be a CBOR map');
  for (const key of decoded.keys()) {
    if (typeof key !== 'string') throw invalid('map keys must be text strings');
    if (!KNOWN_KEYS.has(key)) throw invalid(`unknown field "${key}"`);
  }
  const moduleId = decoded.get('module_id');
  if (typeof moduleId !== 'string' || moduleId.length === 0) throw invalid('module_id must be a non-empty text string');
  const digest = decoded.get('digest');
  if (digest !== 'SHA384') {
    const got = typeof digest === 'string' ? JSON.stringify(digest) : typeof digest;
    throw invalid(`digest must be "SHA384", got ${got}`);
  }
  return {
    moduleId,
    digest,
    timestamp: parseTimestamp(decoded.get('timestamp')),
    pcrs: parsePcrs(decoded.get('pcrs')),
    certificate: boundedBytes(decoded.get('certificate'), 'certificate', 1, MAX_FIELD),
    cabundle: parseCabundle(decoded.get('cabundle')),
    publicKey: optionalBytes(decoded, 'public_key', 1),
    userData: optionalBytes(decoded, 'user_data', 0),
    nonce: optionalBytes(decoded, 'nonce', 0),
  };
}
