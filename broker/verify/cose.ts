import { AttestationError } from './errors.js';
import { CborShapeError, Major, assertSingleItem, itemEnd, readHead, type Head } from './cbor-strict.js';
import { decodeStrict } from './cbor-decode.js';

/** COSE algorithm label for ECDSA P-384 with SHA-384 (RFC 9053). */
export const COSE_ALG_ES384 = -35;
const COSE_SIGN1_TAG = 18;
const ES384_SIGNATURE_BYTES = 96;
const HEADER_ALG = 1;
const HEADER_CRIT = 2;

/** The parts of a COSE_Sign1 that verification needs, as the exact bytes received. */
export interface CoseSign1 {
  readonly protectedHeader: Uint8Array;
  readonly payload: Uint8Array;
  readonly signature: Uint8Array;
}

function malformed(message: string, cause?: unknown): AttestationError {
  return new AttestationError('MALFORMED_COSE', `COSE_Sign1: ${message}`, { cause });
}

function expectByteString(buf: Uint8Array, pos: number, what: string): { head: Head; end: number } {
  const head = readHead(buf, pos);
  if (head.major !== Major.Bytes || head.indefinite) throw malformed(`${what} must be a definite-length byte string`);
  const end = head.end + Number(head.argument);
  if (typeof head.argument === 'bigint' || end > buf.length) throw malformed(`${what} runs past the end of the document`);
  return { head, end };
}

// The encodings every Nitro document carries: {1: -35} and {}. Recognising them byte for byte gives
// exactly the verdict of the general path below, without a decoder round per header.
const ES384_ONLY_HEADER = Uint8Array.of(0xa1, 0x01, 0x38, 0x22);
const EMPTY_MAP = 0xa0;

function checkProtectedHeader(bytes: Uint8Array): void {
  if (bytes.length === ES384_ONLY_HEADER.length && bytes.every((b, i) => b === ES384_ONLY_HEADER[i])) return;
  if (bytes.length === 0) throw new AttestationError('UNSUPPORTED_ALG', 'COSE_Sign1: protected header is empty (no algorithm)');
  let header: unknown;
  try {
    header = decodeStrict(bytes);
  } catch (cause) {
    throw malformed('protected header is not valid CBOR', cause);
  }
  if (!(header instanceof Map)) throw malformed('protected header must encode a map');
  if (!header.has(HEADER_ALG)) throw new AttestationError('UNSUPPORTED_ALG', 'COSE_Sign1: protected header names no algorithm');
  const alg: unknown = header.get(HEADER_ALG);
  if (alg !== COSE_ALG_ES384) {
    throw new AttestationError('UNSUPPORTED_ALG', `COSE_Sign1: algorithm ${String(alg)} is not ES384 (-35)`);
  }
  if (header.size !== 1) throw malformed('protected header carries parameters other than the algorithm');
}

function checkUnprotectedHeader(buf: Uint8Array, start: number, end: number): void {
  if (end - start === 1 && buf[start] === EMPTY_MAP) return;
  let header: unknown;
  try {
    header = decodeStrict(buf.subarray(start, end));
  } catch (cause) {
    throw malformed('unprotected header is not valid CBOR', cause);
  }
  // Some producers send nil for an empty unprotected header. It is outside
  // the signature and keygate reads nothing from it, so nil is taken as {}.
  if (header === null) return;
  if (!(header instanceof Map)) throw malformed('unprotected header must be a map');
  // An algorithm or critical list outside the signed bytes could be swapped by
  // anyone on the path; refuse rather than choose which one to believe.
  if (header.has(HEADER_ALG) || header.has(HEADER_CRIT)) {
    throw malformed('unprotected header must not carry alg or crit');
  }
}

/**
 * Splits a COSE_Sign1 (RFC 9052 section 4.2) into its signed parts without
 * re-encoding anything: the returned protected header and payload are the
 * original bytes, which is what the signature covers. Each is a private
 * plain Uint8Array copy: nothing aliases the caller's buffer.
 *
 * @throws AttestationError MALFORMED_COSE or UNSUPPORTED_ALG
 */
export function parseCoseSign1(bytes: Uint8Array): CoseSign1 {
  const parts = splitCoseSign1(bytes);
  return { protectedHeader: new Uint8Array(parts.protectedHeader), payload: new Uint8Array(parts.payload), signature: new Uint8Array(parts.signature) };
}

/**
 * {@link parseCoseSign1} without the copies: every part is a view into `bytes`, for a caller that
 * finishes with them before `bytes` can change (verification copies the payload once, into the
 * Sig_structure it builds anyway).
 *
 * @throws AttestationError MALFORMED_COSE or UNSUPPORTED_ALG
 */
export function splitCoseSign1(bytes: Uint8Array): CoseSign1 {
  try {
    let pos = 0;
    let head = readHead(bytes, pos);
    if (head.major === Major.Tag) {
      if (head.argument !== COSE_SIGN1_TAG) throw malformed(`unexpected tag ${head.argument} (only 18, COSE_Sign1)`);
      pos = head.end;
      head = readHead(bytes, pos);
    }
    if (head.major !== Major.Array || head.indefinite || head.argument !== 4) {
      throw malformed('expected a definite-length array of 4 items');
    }
    assertSingleItem(bytes, pos);

    const prot = expectByteString(bytes, head.end, 'protected header');
    const unprotectedStart = prot.end;
    const unprotectedHead = readHead(bytes, unprotectedStart);
    const isNil = unprotectedHead.major === Major.Simple && unprotectedHead.argument === 22;
    if (unprotectedHead.major !== Major.Map && !isNil) throw malformed('unprotected header must be a map');
    const payloadStart = itemEnd(bytes, unprotectedStart);
    const payload = expectByteString(bytes, payloadStart, 'payload');
    const sig = expectByteString(bytes, payload.end, 'signature');

    const protectedHeader = bytes.subarray(prot.head.end, prot.end);
    checkProtectedHeader(protectedHeader);
    checkUnprotectedHeader(bytes, unprotectedStart, payloadStart);
    if (payload.end === payload.head.end) throw malformed('payload is empty (detached payloads are not accepted)');
    const signature = bytes.subarray(sig.head.end, sig.end);
    if (signature.length !== ES384_SIGNATURE_BYTES) {
      throw malformed(`signature must be ${ES384_SIGNATURE_BYTES} bytes (raw r||s), got ${signature.length}`);
    }
    return { protectedHeader, payload: bytes.subarray(payload.head.end, payload.end), signature };
  } catch (err) {
    if (err instanceof AttestationError) throw err;
    if (err instanceof CborShapeError) throw malformed(err.message, err);
    throw malformed('unreadable structure', err);
  }
}

const SIG_CONTEXT = new Uint8Array([0x6a, ...new TextEncoder().encode('Signature1')]);

function byteStringHead(length: number): Uint8Array {
  if (length < 24) return Uint8Array.of(0x40 | length);
  if (length < 0x100) return Uint8Array.of(0x58, length);
  if (length < 0x10000) return Uint8Array.of(0x59, length >> 8, length & 0xff);
  return Uint8Array.of(0x5a, (length >>> 24) & 0xff, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff);
}

/**
 * The bytes a COSE_Sign1 signature covers:
 * CBOR(["Signature1", protected, h'', payload]) with the original protected
 * header and payload bytes, in a new plain Uint8Array of its own (the
 * payload is its tail).
 */
export function sigStructure(protectedHeader: Uint8Array, payload: Uint8Array): Uint8Array {
  // One buffer written in place: the payload is copied once, not gathered from a list of parts.
  const protectedHead = byteStringHead(protectedHeader.length);
  const payloadHead = byteStringHead(payload.length);
  const out = new Uint8Array(1 + SIG_CONTEXT.length + protectedHead.length + protectedHeader.length + 1 + payloadHead.length + payload.length);
  let at = 0;
  out[at++] = 0x84;
  out.set(SIG_CONTEXT, at);
  at += SIG_CONTEXT.length;
  out.set(protectedHead, at);
  at += protectedHead.length;
  out.set(protectedHeader, at);
  at += protectedHeader.length;
  out[at++] = 0x40;
  out.set(payloadHead, at);
  at += payloadHead.length;
  out.set(payload, at);
  return out;
}

/** One unsigned big-endian integer as a DER INTEGER: minimal (leading zeros dropped), 0x00 added when the top bit is set. */
function derInteger(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const body = bytes.subarray(i);
  const pad = body[0]! & 0x80 ? 1 : 0;
  const out = new Uint8Array(2 + pad + body.length);
  out[0] = 0x02;
  out[1] = pad + body.length;
  out.set(body, 2 + pad);
  return out;
}

/**
 * A COSE ECDSA signature (raw r || s, RFC 9053 section 2.1) as the DER ECDSA-Sig-Value that
 * OpenSSL verifies directly: exactly what node builds for `dsaEncoding: 'ieee-p1363'`, but without
 * node asking OpenSSL for the key's group size first, which on a key used once (every new enclave
 * leaf) converts the whole key to a legacy EC_KEY (issue 15: fresh-leaf verify cost).
 * Encoding only; the signature math is OpenSSL's. `raw` must have even length (ES384: 96 bytes).
 */
export function rawSignatureToDer(raw: Uint8Array): Uint8Array {
  if (raw.length === 0 || raw.length % 2 !== 0 || raw.length > 132) throw new RangeError('raw ECDSA signature must be r || s of equal, even total length (at most P-521 size)');
  const r = derInteger(raw.subarray(0, raw.length / 2));
  const s = derInteger(raw.subarray(raw.length / 2));
  const length = r.length + s.length;
  // Short-form length up to 127 bytes; P-521 (2 × 69) needs the one-byte long form.
  const head = length < 0x80 ? Uint8Array.of(0x30, length) : Uint8Array.of(0x30, 0x81, length);
  return Buffer.concat([head, r, s]);
}
