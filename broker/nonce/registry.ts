import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';
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
  /**
   * Readiness: resolves when the registry can answer (a shared one: one cheap read of its table).
   *
   * @throws NonceRegistryUnavailableError
   */
  check(): Promise<void>;
  /** Releases clients (shutdown). */
  close(): void;
}


/** Where the nonce registry lives: in this process (one broker), or a DynamoDB table shared by every replica. */
/** (Memory: at most `maxRemembered`, default 200 000, unexpired nonces; DynamoDB: `requestTimeoutMs` default 5 000.) */
export type NonceRegistrySettings = { readonly kind: 'memory'; readonly maxRemembered?: number } | DynamoDbTableSettings;

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
