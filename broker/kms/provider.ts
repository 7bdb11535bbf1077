import type { Binding, ProviderName } from '../policy/types.js';
import { CodedError } from '../../lib/coded-error.js';

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
 *
 * `keyRef` is the binding's provider-specific key reference (see `keyRefOf`),
 * opaque to everything but the provider: a KMS key id or ARN for aws-kms,
 * nothing for local. Implementations are built from config in registry.ts.
 */
export interface KeyProvider {
  readonly name: ProviderName;
  /** Returns base64 ciphertext. */
  encrypt(plaintext: Uint8Array, secret: string, keyRef?: string): Promise<string>;
  /** Decrypts base64 ciphertext produced by `encrypt` for the same secret. */
  decrypt(ciphertext: string, secret: string, keyRef?: string): Promise<Uint8Array>;
  /**
   * Mode kms-recipient (providers that can): has the value decrypted and encrypted to the attested
   * enclave's key by the key service itself, and returns that recipient ciphertext (a CMS EnvelopedData);
   * the value never reaches this process. An answer carrying the value instead is refused
   * (RecipientRefusedError).
   */
  decryptForRecipient?(ciphertext: string, secret: string, keyRef: string | undefined, attestationDocument: Uint8Array): Promise<Uint8Array>;
  /**
   * Readiness: resolves when the provider can serve the given keys (the key
   * references of the bindings in use; aws-kms asks DescribeKey for each).
   *
   * @throws KmsUnavailableError or SecretUnavailableError
   */
  check(keyRefs: readonly string[]): Promise<void>;
  /** Releases clients and connections (at shutdown). */
  close(): void;
}

/** The providers by name, as the broker and the admin operations use them (built by registry.ts). */
export type KeyProviders = ReadonlyMap<ProviderName, KeyProvider>;

/** The binding's key reference for its provider (stored as `kmsKeyId` in the binding file). */
export function keyRefOf(binding: Binding): string | undefined {
  return binding.kmsKeyId;
}

export interface ProviderErrorOptions {
  readonly cause?: unknown;
  /** The provider's own name for the failure (e.g. DisabledException); defaults to the class name. */
  readonly providerError?: string;
}

/** Transient: the provider could not be reached, throttled or failed internally. Nothing is released; retry later. */
export class KmsUnavailableError extends CodedError<'KMS_UNAVAILABLE'> {
  override readonly name: string = 'KmsUnavailableError';
  readonly providerError: string;
  constructor(message: string, options: ProviderErrorOptions = {}) {
    super('KMS_UNAVAILABLE', message, { cause: options.cause });
    this.providerError = options.providerError ?? 'KmsUnavailableError';
  }
}

/** Permanent: the provider refuses this key or ciphertext; retrying does not help until an operator acts. */
export class SecretUnavailableError extends CodedError<'SECRET_UNAVAILABLE'> {
  override readonly name: string = 'SecretUnavailableError';
  readonly providerError: string;
  /** Key references found disabled or deleted: every value cached under them must be dropped. */
  readonly unusableKeys: readonly string[];
  constructor(message: string, options: ProviderErrorOptions & { unusableKeys?: readonly string[] } = {}) {
    super('SECRET_UNAVAILABLE', message, { cause: options.cause });
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
 * Mode kms-recipient: the key service answered Decrypt-with-Recipient with the value itself (`Plaintext`;
 * moto does, and so would any implementation that ignores `Recipient`) or with no recipient ciphertext.
 * Refused, the plaintext wiped unread: the broker must never become a holder of the value. Permanent:
 * an endpoint that ignores Recipient keeps doing so. `providerError` is the stable code the audit records.
 */
export class RecipientRefusedError extends SecretUnavailableError {
  override readonly name: string = 'RecipientRefusedError';
  constructor(providerError: 'KMS_RECIPIENT_PLAINTEXT' | 'KMS_RECIPIENT_MISSING', message: string) {
    super(message, { providerError });
  }
}

/**
 * The identity of the key a value was decrypted under, for dropping cached
 * values when that key is disabled: a key ARN and its bare key id name the
 * same key. (An alias is kept as written; it cannot be resolved offline.)
 */
export function keyIdentity(provider: ProviderName, keyRef: string | undefined): string {
  return `${provider}\0${(keyRef ?? '').replace(/^arn:aws[\w-]*:kms:[^:]*:\d*:key\//, '')}`;
}
