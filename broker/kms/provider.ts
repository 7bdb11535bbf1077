import type { ProviderName } from '../policy/types.js';

/**
 * A key provider encrypts secret values at bind time and decrypts them at
 * release time. The secret's name is bound into every ciphertext (AAD or KMS
 * encryption context), so a ciphertext copied onto another secret's binding
 * does not decrypt.
 */
export interface KeyProvider {
  readonly name: ProviderName;
  /** Returns base64 ciphertext. */
  encrypt(plaintext: Uint8Array, secret: string, kmsKeyId?: string): Promise<string>;
  /** Decrypts base64 ciphertext produced by `encrypt` for the same secret. */
  decrypt(ciphertext: string, secret: string, kmsKeyId?: string): Promise<Uint8Array>;
  /** Resolves when the provider can serve requests (readiness). */
  check(): Promise<void>;
}

/** The provider could not be reached or refused to work: nothing is released. */
export class KmsUnavailableError extends Error {
  override readonly name = 'KmsUnavailableError';
  readonly code = 'KMS_UNAVAILABLE';
}

/** The ciphertext does not decrypt for this secret (tampered, swapped or wrong key). */
export class CiphertextError extends Error {
  override readonly name = 'CiphertextError';
  readonly code = 'KMS_UNAVAILABLE';
}
