import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';
import { CodedError } from '../../lib/coded-error.js';
import type { SigningKey } from '../signing-key.js';

/**
 * The keys every replica must share: the challenge MAC key (a nonce issued
 * by one replica is checked by another) and the broker signing key (enclaves
 * pin one key; the audit seals carry its kid). Each has a purpose name; on
 * DynamoDB it is the item key (`key#<name>`) and the KMS encryption context.
 */
export const SHARED_KEY_NAMES = ['challenge-mac', 'broker-signing'] as const;
export type SharedKeyName = (typeof SHARED_KEY_NAMES)[number];

/** Credentials given in code (tests, embedding); a config file relies on the AWS SDK's credential chain. */

/** Where the shared keys live: files under stateDir (default), or items in a DynamoDB table encrypted under a KMS key. */
export type SharedKeySettings =
  | { readonly kind: 'file' }
  | (Omit<DynamoDbTableSettings, 'maxAttempts'> & {
      /** The KMS key (id, ARN or alias) the key material is encrypted under. The table may be the store's or the nonce table; `endpoint` applies to DynamoDB and KMS alike; `requestTimeoutMs` (default 10 000) bounds each call at start. */
      readonly kmsKeyId: string;
    });

/** The shared keys, loaded. */
export interface SharedKeys {
  /** The broker's Ed25519 signing key (kid: the RFC 7638 thumbprint, whatever the source). */
  readonly signingKey: SigningKey;
  /** The challenge MAC key: 32 bytes. */
  readonly challengeKey: Buffer;
}

/** Bytes of the challenge MAC key. */
export const CHALLENGE_KEY_BYTES = 32;

/** A place the shared keys are created once and loaded from by every replica. */
export interface SharedKeySource {
  /** Loads both keys, creating any that does not exist yet; every replica gets the same ones. */
  load(): Promise<SharedKeys>;
  /** Releases clients. */
  close(): void;
}

export type SharedKeyErrorCode =
  /** DynamoDB or KMS could not be asked (unreachable, throttled past the deadline, access denied, key disabled). */
  | 'SHARED_KEY_UNAVAILABLE'
  /** A stored key was refused: KMS would not decrypt it under its purpose (moved from another purpose, another key), or it is malformed. */
  | 'SHARED_KEY_REJECTED';

/** A shared key could not be loaded: the broker does not start (fail closed). */
export class SharedKeyError extends CodedError<SharedKeyErrorCode> {
  override readonly name = 'SharedKeyError';
  /** The backend's own error name (InvalidCiphertextException, ResourceNotFoundException, TimeoutError, ...). */
  readonly backendError: string;
  constructor(code: SharedKeyErrorCode, message: string, options: { cause?: unknown; backendError: string }) {
    super(code, message, options);
    this.backendError = options.backendError;
  }
}
