import type { ProviderName } from '../policy/types.js';

/**
 * A key provider encrypts secret values at bind time and decrypts them at
 * release time. The secret's name is bound into every ciphertext (AAD or KMS
 * encryption context), so a ciphertext copied onto another secret's binding
 * does not decrypt.
 *
 * Failures come in two classes: `KmsUnavailableError` (transient: throttling,
 * 5xx, timeouts, connection errors; a retry later may succeed) and
 * `SecretUnavailableError` (permanent: the key is disabled, deleted or
 * denied, or the ciphertext does not decrypt; nothing changes until an
 * operator acts). Both carry the provider's own error name for the audit.
 */
export interface KeyProvider {
  readonly name: ProviderName;
  /** Returns base64 ciphertext. */
  encrypt(plaintext: Uint8Array, secret: string, kmsKeyId?: string): Promise<string>;
  /** Decrypts base64 ciphertext produced by `encrypt` for the same secret. */
  decrypt(ciphertext: string, secret: string, kmsKeyId?: string): Promise<Uint8Array>;
  /**
   * Readiness: resolves when the provider can serve the given keys (the key ids
   * of the bindings in use; aws-kms asks DescribeKey for each).
   *
   * @throws KmsUnavailableError or SecretUnavailableError
   */
  check(kmsKeyIds: readonly string[]): Promise<void>;
}

export interface ProviderErrorOptions {
  readonly cause?: unknown;
  /** The provider's own name for the failure (e.g. DisabledException); defaults to the class name. */
  readonly providerError?: string;
}

/** Transient: the provider could not be reached, throttled or failed internally. Nothing is released; retry later. */
export class KmsUnavailableError extends Error {
  override readonly name: string = 'KmsUnavailableError';
  readonly code = 'KMS_UNAVAILABLE';
  readonly providerError: string;
  constructor(message: string, options: ProviderErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.providerError = options.providerError ?? 'KmsUnavailableError';
  }
}

/** Permanent: the provider refuses this key or ciphertext; retrying does not help until an operator acts. */
export class SecretUnavailableError extends Error {
  override readonly name: string = 'SecretUnavailableError';
  readonly code = 'SECRET_UNAVAILABLE';
  readonly providerError: string;
  /** Key ids found disabled or deleted: every value cached under them must be dropped. */
  readonly unusableKeys: readonly string[];
  constructor(message: string, options: ProviderErrorOptions & { unusableKeys?: readonly string[] } = {}) {
    super(message, { cause: options.cause });
    this.providerError = options.providerError ?? this.name;
    this.unusableKeys = options.unusableKeys ?? [];
  }
}

/** The ciphertext does not decrypt for this secret (tampered, swapped, wrong key or encryption context). */
export class CiphertextError extends SecretUnavailableError {
  override readonly name: string = 'CiphertextError';
  constructor(message: string, options: ProviderErrorOptions = {}) {
    super(message, { ...options, providerError: options.providerError ?? 'CiphertextError' });
  }
}

/**
 * The identity of the key a value was decrypted under, for dropping cached
 * values when that key is disabled: a key ARN and its bare key id name the
 * same key. (An alias is kept as written; it cannot be resolved offline.)
 */
export function keyIdentity(provider: ProviderName, kmsKeyId: string | undefined): string {
  return `${provider}\0${(kmsKeyId ?? '').replace(/^arn:aws[\w-]*:kms:[^:]*:\d*:key\//, '')}`;
}
