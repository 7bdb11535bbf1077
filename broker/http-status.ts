import type { BrokerErrorCode } from './protocol/index.js';

/**
 * The HTTP status each broker error code is answered with: the one place a
 * code meets the transport (domain errors carry codes only). A Record, so a
 * code added to broker/protocol/codes.ts does not compile until it has a status.
 */
export const HTTP_STATUS: Readonly<Record<BrokerErrorCode, 400 | 401 | 403 | 404 | 405 | 413 | 429 | 500 | 503>> = {
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
  /** A known route asked with another method (the answer carries Allow). */
  METHOD_NOT_ALLOWED: 405,
  /** A body over maxBodyBytes: refused before it is read further. */
  PAYLOAD_TOO_LARGE: 413,
  RATE_LIMITED: 429,
  QUARANTINED: 429,
  INTERNAL_ERROR: 500,
  KMS_UNAVAILABLE: 503,
  STORE_UNAVAILABLE: 503,
  /** Permanent provider refusal (key disabled, deleted or denied; ciphertext does not decrypt): not retryable. */
  SECRET_UNAVAILABLE: 500,
};
