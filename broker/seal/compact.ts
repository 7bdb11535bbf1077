import { constants, createCipheriv, publicEncrypt, randomFillSync, sign, type KeyObject } from 'node:crypto';

/**
 * The two JOSE compact serialisations a release answer is made of, produced
 * with node:crypto directly: `signCompactEdDSA` (RFC 7515 JWS, alg EdDSA) and
 * `encryptCompactRsaOaep256A256Gcm` (RFC 7516 JWE, alg RSA-OAEP-256, enc
 * A256GCM). Only the formatting lives here; every primitive is OpenSSL's.
 *
 * Why not jose: jose works through WebCrypto, which for each answer imports
 * the CEK as a CryptoKey, runs RSA-OAEP, AES-GCM and Ed25519 as promise jobs
 * on the libuv threadpool and wraps each key in a CryptoKey. The same
 * operations called synchronously cost about a third of the CPU (~70 µs
 * against ~240 µs an answer, key import included, measured in-process).
 * The output is what jose produces for the same header (header members in
 * the order given, as jose's JSON.stringify of it), and the enclave agent
 * opens it with jose's compactDecrypt/compactVerify (test/broker/seal.test.ts).
 */

/** Protected header of a release JWS: `alg` first, then the caller's members in their order. */
export type EdDsaHeader = { readonly alg: 'EdDSA' } & Readonly<Record<string, string>>;

/** Protected header of a release JWE: `alg` and `enc` first, then the caller's members in their order. */
export type RsaOaep256A256GcmHeader = { readonly alg: 'RSA-OAEP-256'; readonly enc: 'A256GCM' } & Readonly<Record<string, string>>;

const CEK_BYTES = 32; // A256GCM
const IV_BYTES = 12; // 96-bit GCM nonce, RFC 7518 §5.3
/** One answer's randomness: its CEK, then its IV. */
const DRAW_BYTES = CEK_BYTES + IV_BYTES;
/**
 * Answers' randomness is drawn from the CSPRNG 64 answers at a time: each call into OpenSSL's DRBG costs about
 * 4 µs of an answer in place (a 44-byte randomBytes), one 2816-byte fill about as much as one call (issue 15,
 * measured A/B in one process). Each answer takes the next unused 44 bytes, exactly once, and zeroes them once
 * used (the pool is refilled only when every draw was taken); draws not yet taken sit in this process's memory,
 * as the secrets themselves do. One pool per module instance: worker threads and broker workers have their own.
 */
const POOL_DRAWS = 64;
const pool = Buffer.allocUnsafeSlow(DRAW_BYTES * POOL_DRAWS);
let poolAt = pool.length;

/** The next unused CEK + IV bytes (a view of the pool the caller zeroes once used). */
function drawCekAndIv(): Buffer {
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  const draw = pool.subarray(poolAt, poolAt + DRAW_BYTES);
  poolAt += DRAW_BYTES;
  return draw;
}

function b64u(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64url');
}

function encodeHeader(header: Readonly<Record<string, string>>): string {
  return Buffer.from(JSON.stringify(header), 'utf8').toString('base64url');
}

/**
 * A compact JWS over `payload`: BASE64URL(header) . BASE64URL(payload) . BASE64URL(Ed25519 signature).
 * Ed25519 is deterministic, so this is byte for byte what jose's CompactSign gives for the same key, header and payload.
 *
 * @param privateKey - an Ed25519 private KeyObject (made once, at start)
 * @throws Error when the header does not say EdDSA or the key is not Ed25519
 */
export function signCompactEdDSA(header: EdDsaHeader, payload: Uint8Array, privateKey: KeyObject): string {
  if (header.alg !== 'EdDSA') throw new Error('signCompactEdDSA signs EdDSA only');
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') throw new Error('signCompactEdDSA needs an Ed25519 private key');
  const signingInput = `${encodeHeader(header)}.${b64u(payload)}`;
  // Ed25519 takes no separate digest: the algorithm argument is null (RFC 8032 PureEdDSA, as JWS EdDSA specifies).
  return `${signingInput}.${b64u(sign(null, Buffer.from(signingInput, 'latin1'), privateKey))}`;
}

/**
 * A compact JWE of `plaintext` to `recipient`: a fresh random 256-bit CEK wrapped with RSAES-OAEP (SHA-256, MGF1
 * SHA-256), a fresh random 96-bit IV, AES-256-GCM over the plaintext with the encoded protected header as AAD.
 * BASE64URL(header) . BASE64URL(wrapped CEK) . BASE64URL(IV) . BASE64URL(ciphertext) . BASE64URL(tag).
 * The CEK and IV are wiped once used.
 *
 * @param recipient - an RSA public KeyObject (broker/recipient-key.ts checks it is RSA-2048)
 * @throws Error when the header does not say RSA-OAEP-256 / A256GCM or the key is not an RSA public key
 */
export function encryptCompactRsaOaep256A256Gcm(header: RsaOaep256A256GcmHeader, plaintext: Uint8Array, recipient: KeyObject): string {
  if (header.alg !== 'RSA-OAEP-256' || header.enc !== 'A256GCM') throw new Error('encryptCompactRsaOaep256A256Gcm encrypts RSA-OAEP-256 / A256GCM only');
  if (recipient.type !== 'public' || recipient.asymmetricKeyType !== 'rsa') throw new Error('encryptCompactRsaOaep256A256Gcm needs an RSA public key');
  const protectedHeader = encodeHeader(header);
  // One draw for the CEK and the IV (the halves never overlap), never used by another answer.
  const random = drawCekAndIv();
  const cek = random.subarray(0, CEK_BYTES);
  try {
    const iv = random.subarray(CEK_BYTES);
    const wrapped = publicEncrypt({ key: recipient, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);
    const cipher = createCipheriv('aes-256-gcm', cek, iv);
    // RFC 7516 §5.1 step 14: the AAD is ASCII(BASE64URL(UTF8(protected header))).
    cipher.setAAD(Buffer.from(protectedHeader, 'latin1'));
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return `${protectedHeader}.${b64u(wrapped)}.${b64u(iv)}.${b64u(ciphertext)}.${b64u(cipher.getAuthTag())}`;
  } finally {
    random.fill(0);
  }
}
