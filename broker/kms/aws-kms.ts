import { DecryptCommand, DescribeKeyCommand, EncryptCommand, KMSClient, type KMSClientConfig } from '@aws-sdk/client-kms';
import { CiphertextError, KmsUnavailableError, RecipientRefusedError, SecretUnavailableError, type KeyProvider } from './provider.js';

/** Settings for the AWS KMS provider; anything unset comes from the usual AWS SDK configuration. */
export interface AwsKmsSettings {
  readonly region?: string;
  /** Override the endpoint (a VPC endpoint, vsock-proxy, or a local test server). */
  readonly endpoint?: string;
  readonly credentials?: KMSClientConfig['credentials'];
  /** SDK attempts per call, retries of throttling and 5xx included. Default 3. */
  readonly maxAttempts?: number;
  /** Time budget of one provider call in milliseconds, SDK retries included. Default 10 000. */
  readonly requestTimeoutMs?: number;
}

/** The encryption context binding a ciphertext to its secret name. */
export function encryptionContext(secret: string): Record<string, string> {
  return { 'keygate:secret': secret };
}

const CIPHERTEXT_ERRORS = new Set(['InvalidCiphertextException', 'IncorrectKeyException']);
/** The key is disabled, pending deletion or gone: permanent, and every value cached under it is dropped. */
const KEY_UNUSABLE_ERRORS = new Set(['DisabledException', 'KMSInvalidStateException', 'NotFoundException']);
/** Refusals that a retry cannot change. Anything else (throttling, 5xx, timeouts, connection errors) is transient. */
const PERMANENT_ERRORS = new Set(['AccessDeniedException', 'InvalidKeyUsageException', 'InvalidGrantTokenException', 'ValidationException']);
/** Largest CiphertextForRecipient passed on (a 64 KiB value in its CMS envelope fits with room to spare). */
const MAX_RECIPIENT_CIPHERTEXT_BYTES = 256 * 1024;
/** DescribeKey states in which the key cannot decrypt until an operator acts. */
const UNUSABLE_STATES = new Set(['Disabled', 'PendingDeletion', 'PendingImport', 'PendingReplicaDeletion']);

/**
 * The real AWS KMS, through @aws-sdk/client-kms. Encrypt at bind time and
 * Decrypt at release time, both with an encryption context naming the secret.
 */
export class AwsKmsKeyProvider implements KeyProvider {
  readonly name = 'aws-kms' as const;
  readonly #settings: AwsKmsSettings;
  #kms: KMSClient | undefined;

  constructor(settings: AwsKmsSettings = {}) {
    this.#settings = settings;
  }

  /** The SDK client, built on first use so commands that never call KMS do not load its configuration. */
  get #client(): KMSClient {
    const settings = this.#settings;
    this.#kms ??= new KMSClient({
      ...(settings.region ? { region: settings.region } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
      maxAttempts: settings.maxAttempts ?? 3,
    });
    return this.#kms;
  }

  /** A release must not hang on KMS: each call gets a hard deadline. */
  #deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 10_000) };
  }

  #failure(err: unknown, what: string, kmsKeyId?: string): Error {
    const name = (err as { name?: string }).name || 'Error';
    const options = { cause: err, providerError: name };
    if (CIPHERTEXT_ERRORS.has(name)) return new CiphertextError(`KMS ${what}: ${name}`, options);
    if (KEY_UNUSABLE_ERRORS.has(name)) return new SecretUnavailableError(`KMS ${what}: ${name}`, { ...options, unusableKeys: kmsKeyId ? [kmsKeyId] : [] });
    if (PERMANENT_ERRORS.has(name)) return new SecretUnavailableError(`KMS ${what}: ${name}`, options);
    return new KmsUnavailableError(`KMS ${what} failed: ${name}`, options);
  }

  async encrypt(plaintext: Uint8Array, secret: string, kmsKeyId?: string): Promise<string> {
    if (!kmsKeyId) throw new TypeError('the aws-kms provider needs a KMS key id');
    try {
      const out = await this.#client.send(new EncryptCommand({ KeyId: kmsKeyId, Plaintext: plaintext, EncryptionContext: encryptionContext(secret) }), this.#deadline());
      if (!out.CiphertextBlob) throw new Error('KMS returned no ciphertext');
      return Buffer.from(out.CiphertextBlob).toString('base64');
    } catch (err) {
      throw this.#failure(err, 'Encrypt');
    }
  }

  async decrypt(ciphertext: string, secret: string, kmsKeyId?: string): Promise<Uint8Array> {
    try {
      const out = await this.#client.send(
        new DecryptCommand({
          CiphertextBlob: Buffer.from(ciphertext, 'base64'),
          EncryptionContext: encryptionContext(secret),
          ...(kmsKeyId ? { KeyId: kmsKeyId } : {}),
        }),
        this.#deadline(),
      );
      if (!out.Plaintext) throw new Error('KMS returned no plaintext');
      return out.Plaintext;
    } catch (err) {
      throw this.#failure(err, 'Decrypt', kmsKeyId);
    }
  }

  /**
   * Decrypt with `Recipient`: KMS checks the attestation document (and any kms:RecipientAttestation
   * conditions of the key policy) and returns the value encrypted to the document's public key.
   */
  async decryptForRecipient(ciphertext: string, secret: string, kmsKeyId: string | undefined, attestationDocument: Uint8Array): Promise<Uint8Array> {
    let out;
    try {
      out = await this.#client.send(
        new DecryptCommand({
          CiphertextBlob: Buffer.from(ciphertext, 'base64'),
          EncryptionContext: encryptionContext(secret),
          ...(kmsKeyId ? { KeyId: kmsKeyId } : {}),
          Recipient: { KeyEncryptionAlgorithm: 'RSAES_OAEP_SHA_256', AttestationDocument: attestationDocument },
        }),
        this.#deadline(),
      );
    } catch (err) {
      throw this.#failure(err, 'Decrypt (Recipient)', kmsKeyId);
    }
    // Fail closed: an endpoint that ignored Recipient must not make this process a plaintext holder.
    if (out.Plaintext?.length) {
      out.Plaintext.fill(0);
      throw new RecipientRefusedError('KMS_RECIPIENT_PLAINTEXT', 'KMS answered Decrypt with Recipient with the plaintext instead of CiphertextForRecipient (refused, wiped unread)');
    }
    const cms = out.CiphertextForRecipient;
    if (!cms?.length || cms.length > MAX_RECIPIENT_CIPHERTEXT_BYTES) throw new RecipientRefusedError('KMS_RECIPIENT_MISSING', 'KMS answered Decrypt with Recipient without a usable CiphertextForRecipient');
    return cms;
  }

  /** Every key in use must be Enabled (DescribeKey); a disabled or deleted key is named in the error. */
  async check(kmsKeyIds: readonly string[]): Promise<void> {
    const results = await Promise.allSettled(
      [...new Set(kmsKeyIds)].map(async (keyId) => {
        let state: string | undefined;
        try {
          state = (await this.#client.send(new DescribeKeyCommand({ KeyId: keyId }), this.#deadline())).KeyMetadata?.KeyState;
        } catch (err) {
          throw this.#failure(err, 'DescribeKey', keyId);
        }
        if (state === 'Enabled') return;
        if (state && UNUSABLE_STATES.has(state)) throw new SecretUnavailableError(`KMS key is ${state}`, { providerError: `KeyState${state}`, unusableKeys: [keyId] });
        throw new KmsUnavailableError(`KMS key is ${state ?? 'in an unknown state'}`, { providerError: `KeyState${state ?? 'Unknown'}` });
      }),
    );
    const errors = results.flatMap((r) => (r.status === 'rejected' ? [r.reason as Error] : []));
    const permanent = errors.filter((e): e is SecretUnavailableError => e instanceof SecretUnavailableError);
    if (permanent.length) {
      throw new SecretUnavailableError(permanent[0]!.message, { cause: permanent[0], providerError: permanent[0]!.providerError, unusableKeys: permanent.flatMap((e) => e.unusableKeys) });
    }
    if (errors.length) throw errors[0]!;
  }

  close(): void {
    this.#kms?.destroy();
    this.#kms = undefined;
  }
}
