import { CodedError } from '../../lib/coded-error.js';

/**
 * What consuming a nonce came to: `fresh` (first use: go on), `used` (seen
 * before: a replay), `busy` (the registry cannot remember one more right now:
 * refuse, the caller may retry).
 */
export type NonceUse = 'fresh' | 'used' | 'busy';

/**
 * The single-use memory of challenge nonces. It only sees nonces that
 * ChallengeService has already found authentic and unexpired (junk never
 * reaches it), so what it stores is bounded by what this broker issued.
 */
export interface NonceRegistry {
  /**
   * Marks nonce `id` as used, atomically: of any number of concurrent calls
   * with one id (on any replica sharing the registry), at most one gets
   * `fresh`. `rememberUntil` (epoch ms) is when no replica accepts the nonce
   * any more, so it may be forgotten after that.
   *
   * @throws NonceRegistryUnavailableError when the registry cannot answer (fail closed: nothing is released)
   */
  consume(id: string, rememberUntil: number, now: number): Promise<NonceUse>;
  /** Releases clients (shutdown). */
  close(): void;
}

/** Credentials given in code (tests, embedding); a config file relies on the AWS SDK's credential chain. */
export interface StaticAwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/** Where the nonce registry lives: in this process (one broker), or a DynamoDB table shared by every replica. */
export type NonceRegistrySettings =
  | { readonly kind: 'memory'; readonly maxRemembered?: number }
  | {
      readonly kind: 'dynamodb';
      readonly table: string;
      /** Unset: the AWS SDK's usual configuration (AWS_REGION, profile). */
      readonly region?: string;
      /** Unset: the SDK's (AWS_ENDPOINT_URL, or DynamoDB's regional endpoint). */
      readonly endpoint?: string;
      /** Only from code, never from a config file. Unset: the SDK's credential chain. */
      readonly credentials?: StaticAwsCredentials;
      /** SDK attempts per consume, throttling retries included. Default 3. */
      readonly maxAttempts?: number;
      /** Deadline of one consume in ms, SDK retries included. Default 5 000. */
      readonly requestTimeoutMs?: number;
    };

/** The registry could not say whether a nonce was used (throttled, unreachable, denied): the request is refused. */
export class NonceRegistryUnavailableError extends CodedError<'NONCE_REGISTRY_UNAVAILABLE'> {
  override readonly name = 'NonceRegistryUnavailableError';
  /** The backend's own error name (ThrottlingException, TimeoutError, ...), for the audit and the operator. */
  readonly registryError: string;
  constructor(message: string, options: { cause?: unknown; registryError: string }) {
    super('NONCE_REGISTRY_UNAVAILABLE', message, options);
    this.registryError = options.registryError;
  }
}
