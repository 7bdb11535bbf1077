import type { AttestationErrorCode } from './verify/index.js';

/** Every code the broker API can answer with (design.md section 2). */
export type BrokerErrorCode =
  | AttestationErrorCode
  | 'UNKNOWN_SECRET'
  | 'POLICY_DENIED'
  | 'RATE_LIMITED'
  | 'QUARANTINED'
  | 'REVOKED'
  | 'KMS_UNAVAILABLE'
  | 'STORE_UNAVAILABLE'
  | 'SECRET_UNAVAILABLE'
  | 'BAD_REQUEST'
  | 'UNAUTHORIZED'
  | 'NOT_FOUND'
  | 'INTERNAL_ERROR';

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
  UNAUTHORIZED: 401,
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
