/**
 * Opens a released item synchronously with node:crypto: the compact JWE (RSA-OAEP-256 key transport, A256GCM
 * content) the broker encrypted to this enclave's key, and the compact JWS (EdDSA) inside it, signed by the pinned
 * broker key. jose does the same through WebCrypto, which runs the key unwrap, the content decryption and the
 * signature check each as a job on the libuv threadpool: three thread hand-offs (and wake-ups) per re-attesting
 * fetch, on the path an enclave waits on (issue 15, goal 4). The primitives are node:crypto's (OpenSSL); only
 * the compact serialisation is read here, and only the one shape the broker produces is accepted:
 *
 * - JWE: five base64url parts; protected header a JSON object with alg "RSA-OAEP-256" and enc "A256GCM", no "zip"
 *   (no compression) and no "crit" (no extension is understood); a 96-bit IV and a 128-bit tag; the protected
 *   header's ASCII as additional authenticated data (RFC 7516 5.2).
 * - JWS: three base64url parts; protected header a JSON object with alg "EdDSA" and no "crit" (so no "b64": the
 *   payload is base64url); signature over ASCII(header "." payload) (RFC 7515 5.2).
 *
 * Like jose, a key unwrap that fails (or yields a key of the wrong length) carries on with a random key, so the
 * only observable failure is the content's authentication tag: a relay cannot use the enclave as an oracle on
 * the RSA step. Every refusal is a ReleaseEnvelopeError, code UNTRUSTED_RESPONSE (what the agent reports).
 */
import { constants, createDecipheriv, privateDecrypt, randomBytes, verify, type KeyObject } from 'node:crypto';
import { CodedError } from '../lib/coded-error.js';

/** The item is not what the broker sends to this enclave: the agent's verdict UNTRUSTED_RESPONSE. */
export class ReleaseEnvelopeError extends CodedError<'UNTRUSTED_RESPONSE'> {
  override readonly name = 'ReleaseEnvelopeError';

  constructor(message: string) {
    super('UNTRUSTED_RESPONSE', message);
  }
}

const B64URL = /^[A-Za-z0-9_-]*$/;
const CEK_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** Strict base64url (no padding, no other characters, no impossible length): Buffer alone would skip junk. */
function b64u(part: string, what: string): Buffer {
  if (!B64URL.test(part) || part.length % 4 === 1) throw new ReleaseEnvelopeError(`${what} is not base64url`);
  return Buffer.from(part, 'base64url');
}

/** A protected header: base64url of a JSON object, with no extension we would have to understand. */
function header(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(b64u(part, what).toString('utf8'));
  } catch (err) {
    throw err instanceof ReleaseEnvelopeError ? err : new ReleaseEnvelopeError(`${what} is not JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ReleaseEnvelopeError(`${what} is not a JSON object`);
  const h = value as Record<string, unknown>;
  if (h.crit !== undefined) throw new ReleaseEnvelopeError(`${what} names critical extensions`);
  return h;
}

/** Decrypts a compact RSA-OAEP-256 / A256GCM JWE with `privateKey`: the plaintext bytes. */
export function decryptCompactJwe(jwe: string, privateKey: KeyObject): Buffer {
  const parts = jwe.split('.');
  if (parts.length !== 5) throw new ReleaseEnvelopeError('JWE is not in compact form (five parts)');
  const [protectedPart, keyPart, ivPart, ciphertextPart, tagPart] = parts as [string, string, string, string, string];
  const h = header(protectedPart, 'JWE protected header');
  if (h.alg !== 'RSA-OAEP-256') throw new ReleaseEnvelopeError('JWE alg is not RSA-OAEP-256');
  if (h.enc !== 'A256GCM') throw new ReleaseEnvelopeError('JWE enc is not A256GCM');
  if (h.zip !== undefined) throw new ReleaseEnvelopeError('JWE is compressed (zip)');
  const encryptedKey = b64u(keyPart, 'JWE encrypted key');
  const iv = b64u(ivPart, 'JWE IV');
  const ciphertext = b64u(ciphertextPart, 'JWE ciphertext');
  const tag = b64u(tagPart, 'JWE tag');
  if (encryptedKey.length === 0) throw new ReleaseEnvelopeError('JWE has no encrypted key');
  if (iv.length !== IV_BYTES) throw new ReleaseEnvelopeError('JWE IV is not 96 bits');
  if (tag.length !== TAG_BYTES) throw new ReleaseEnvelopeError('JWE tag is not 128 bits');
  let cek: Buffer;
  try {
    cek = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, encryptedKey);
    if (cek.length !== CEK_BYTES) cek = randomBytes(CEK_BYTES);
  } catch {
    cek = randomBytes(CEK_BYTES);
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', cek, iv, { authTagLength: TAG_BYTES });
    decipher.setAAD(Buffer.from(protectedPart, 'ascii'));
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    throw new ReleaseEnvelopeError('JWE does not decrypt for this key (authentication failed)');
  } finally {
    cek.fill(0);
  }
}

/** Verifies a compact EdDSA JWS with `publicKey`: the payload bytes. */
export function verifyCompactJws(jws: string, publicKey: KeyObject): Buffer {
  const parts = jws.split('.');
  if (parts.length !== 3) throw new ReleaseEnvelopeError('JWS is not in compact form (three parts)');
  const [protectedPart, payloadPart, signaturePart] = parts as [string, string, string];
  if (header(protectedPart, 'JWS protected header').alg !== 'EdDSA') throw new ReleaseEnvelopeError('JWS alg is not EdDSA');
  const payload = b64u(payloadPart, 'JWS payload');
  const signature = b64u(signaturePart, 'JWS signature');
  let valid = false;
  try {
    valid = verify(null, Buffer.from(`${protectedPart}.${payloadPart}`, 'ascii'), publicKey, signature);
  } catch {
    valid = false;
  }
  if (!valid) throw new ReleaseEnvelopeError('JWS signature does not verify with the pinned broker key');
  return payload;
}

/** A released item's signed payload: `jwe` decrypted with `privateKey`, its JWS verified with `brokerKey`. */
export function openReleaseEnvelope(jwe: string, privateKey: KeyObject, brokerKey: KeyObject): Buffer {
  const jws = decryptCompactJwe(jwe, privateKey);
  try {
    return verifyCompactJws(jws.toString('latin1'), brokerKey);
  } finally {
    jws.fill(0);
  }
}
