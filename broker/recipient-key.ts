import { createPublicKey, type KeyObject } from 'node:crypto';
import { DerError, Tag, children, expectTlv } from './verify/der.js';
import { Lru } from './verify/lru.js';

/** The enclave's RSA-2048 public key, what broker/seal/compact.ts encrypts to (RSA-OAEP-256). */
export type RecipientKey = KeyObject;

// AlgorithmIdentifier { rsaEncryption, NULL }
const RSA_ENCRYPTION = Buffer.from('300d06092a864886f70d0101010500', 'hex');

/** Strips the sign byte DER adds to a positive INTEGER. */
function unsigned(content: Uint8Array): Uint8Array {
  if (content.length === 0 || content[0]! & 0x80) throw new DerError('RSA integers must be positive');
  if (content.length > 1 && content[0] === 0 && (content[1]! & 0x80) === 0) throw new DerError('non-minimal INTEGER');
  return content[0] === 0 ? content.subarray(1) : content;
}

/**
 * Reads an RSA-2048 SubjectPublicKeyInfo and imports it for RSA-OAEP-256.
 * The SPKI is taken apart here and imported as a JWK because OpenSSL 3's
 * generic SPKI decoder costs ~90 µs a key, about 15 times the JWK path, and
 * a newly booted enclave brings a key not seen before (RecipientKeyCache
 * below keeps the ones seen again). A node:crypto KeyObject,
 * not a WebCrypto CryptoKey: the import is synchronous and ~5 times cheaper.
 *
 * @throws DerError when the bytes are not an RSA-2048 SPKI (node:crypto rejects bad values)
 */
export function importRsa2048Spki(spki: Uint8Array): RecipientKey {
  const outer = expectTlv(spki, 0, Tag.Sequence, 'SubjectPublicKeyInfo');
  if (outer.end !== spki.length) throw new DerError('trailing bytes after SubjectPublicKeyInfo');
  const [alg, bits, ...rest] = children(outer);
  if (!alg || !bits || rest.length || Buffer.compare(alg.raw, RSA_ENCRYPTION) !== 0) throw new DerError('not an rsaEncryption key');
  if (bits.tag !== Tag.BitString || bits.content[0] !== 0) throw new DerError('subjectPublicKey must be a whole-byte BIT STRING');
  const keyBytes = bits.content.subarray(1);
  const rsaKey = expectTlv(keyBytes, 0, Tag.Sequence, 'RSAPublicKey');
  if (rsaKey.end !== keyBytes.length) throw new DerError('trailing bytes after RSAPublicKey');
  const [n, e, ...more] = children(rsaKey);
  if (!n || !e || more.length || n.tag !== Tag.Integer || e.tag !== Tag.Integer) throw new DerError('RSAPublicKey must be two INTEGERs');
  const modulus = unsigned(n.content);
  const exponent = unsigned(e.content);
  if (modulus.length !== 256 || !(modulus[0]! & 0x80)) throw new DerError('modulus is not 2048 bits');
  if (exponent.length > 4 || !(exponent[exponent.length - 1]! & 1) || (exponent.length === 1 && exponent[0]! < 3)) throw new DerError('unusable public exponent');
  const jwk = { kty: 'RSA', n: Buffer.from(modulus).toString('base64url'), e: Buffer.from(exponent).toString('base64url') };
  return createPublicKey({ key: jwk, format: 'jwk' });
}

/**
 * `importRsa2048Spki` with the last `max` keys kept, by their exact SPKI bytes. An enclave agent keeps one
 * key pair for its life (enclave-agent/agent.ts), so every re-attestation brings the same SPKI again; a
 * kept KeyObject also keeps OpenSSL's per-key Montgomery set-up, which makes each RSA-OAEP encryption
 * ~11 µs cheaper than with a fresh import (issue 15). Equal bytes give an equal key, so the answer is the
 * one a fresh import gives; bytes that fail the checks are never kept (they throw each time). Bounded:
 * a flood of distinct keys only evicts.
 */
export class RecipientKeyCache {
  readonly #keys: Lru<string, RecipientKey>;

  constructor(max = 1024) {
    this.#keys = new Lru(max);
  }

  /** @throws DerError as importRsa2048Spki */
  import(spki: Uint8Array): RecipientKey {
    // latin1: one character per byte, so equal strings are equal bytes.
    const id = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength).toString('latin1');
    let key = this.#keys.get(id);
    if (!key) {
      key = importRsa2048Spki(spki);
      this.#keys.set(id, key);
    }
    return key;
  }

  get size(): number {
    return this.#keys.size;
  }
}
