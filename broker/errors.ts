import type { BrokerErrorCode } from './protocol/index.js';

/**
 * Every code the broker API can answer with: the list lives in the wire
 * contract (broker/protocol); release.ts passes verification codes through,
 * so the compiler checks they are all on it.
 */
export type { BrokerErrorCode };

const STATUS: Record<BrokerErrorCode, number> = {
  MALFORMED_COSE: 400,
  UNSUPPORTED_ALG: 400,
  MALFORMED_PAYLOAD: 400,
  BAD_REQUEST: 400,
  CERT_CHAIN_INVALID: 401,
  UNTRUSTED_ROOT: 401,
  CERT_EXPIRED: 401,
  BAD_SIGNATURE: 401,
  DOC_EXPIRED: 401,
  NONCE_MISMATCH: 401,
  PCR_MISMATCH: 403,
  DEBUG_MODE: 403,
  UNKNOWN_SECRET: 403,
  POLICY_DENIED: 403,
  REVOKED: 403,
  NOT_FOUND: 404,
  RATE_LIMITED: 429,
  QUARANTINED: 429,
  INTERNAL_ERROR: 500,
  KMS_UNAVAILABLE: 503,
  STORE_UNAVAILABLE: 503,
  /** Permanent provider refusal (key disabled, deleted or denied; ciphertext does not decrypt): not retryable. */
  SECRET_UNAVAILABLE: 500,
};

/** An error answered to the caller as `{ error: { code, message } }`; the message must carry no internal detail. */
export class BrokerError extends Error {
  override readonly name = 'BrokerError';
  constructor(
    readonly code: BrokerErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  get status(): number {
    return STATUS[this.code];
  }
}
