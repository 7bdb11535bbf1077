import { CodedError } from '../../lib/coded-error.js';
import { SecretUnavailableError, type KeyProvider } from './provider.js';

/** The provider error name the audit records for a local-provider binding a shared store refuses. */
export const LOCAL_PROVIDER_REFUSED = 'LocalProviderRefused';

const WHY =
  'the local key provider is refused on a shared (DynamoDB) store: its key file is per machine, so other replicas cannot decrypt what it encrypts; use --provider aws-kms --kms-key-id KEY';

/** An admin asked the local provider to encrypt for a shared store (`keygate bind/rotate`). */
export class LocalProviderRefusedError extends CodedError<'LOCAL_PROVIDER_REFUSED'> {
  override readonly name = 'LocalProviderRefusedError';
  constructor(secret: string) {
    super('LOCAL_PROVIDER_REFUSED', `"${secret}": ${WHY}`);
  }
}

/**
 * Stands in for the local provider when the store is shared by replicas: it
 * never encrypts (binds and rotations are refused with LOCAL_PROVIDER_REFUSED)
 * and never decrypts (a local binding found in the store, copied with
 * --allow-local or written by an older keygate, is denied to every enclave
 * as SECRET_UNAVAILABLE, audited with providerError LocalProviderRefused, and
 * /readyz reports it) -- even on the machine whose key file would decrypt it,
 * so every replica answers the same.
 */
export class RefusedLocalProvider implements KeyProvider {
  readonly name = 'local' as const;

  async encrypt(_plaintext: Uint8Array, secret: string): Promise<string> {
    throw new LocalProviderRefusedError(secret);
  }

  async decrypt(_ciphertext: string, secret: string): Promise<Uint8Array> {
    throw new SecretUnavailableError(`"${secret}": ${WHY}`, { providerError: LOCAL_PROVIDER_REFUSED });
  }

  async check(): Promise<void> {
    throw new SecretUnavailableError(WHY, { providerError: LOCAL_PROVIDER_REFUSED });
  }

  close(): void {}
}
