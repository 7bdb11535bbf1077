import { DecryptCommand, EncryptCommand, GenerateRandomCommand, KMSClient, type KMSClientConfig } from '@aws-sdk/client-kms';
import { CiphertextError, KmsUnavailableError, type KeyProvider } from './provider.js';

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

  #failure(err: unknown, what: string): Error {
    const name = (err as { name?: string }).name ?? 'Error';
    if (CIPHERTEXT_ERRORS.has(name)) return new CiphertextError(`KMS ${what}: ${name}`, { cause: err });
    return new KmsUnavailableError(`KMS ${what} failed: ${name}`, { cause: err });
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
      throw this.#failure(err, 'Decrypt');
    }
  }

  async check(): Promise<void> {
    try {
      await this.#client.send(new GenerateRandomCommand({ NumberOfBytes: 1 }), this.#deadline());
    } catch (err) {
      throw this.#failure(err, 'GenerateRandom');
    }
  }

  destroy(): void {
    this.#kms?.destroy();
    this.#kms = undefined;
  }
}
