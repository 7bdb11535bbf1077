import type { BrokerErrorCode } from './protocol/index.js';

/**
 * The HTTP status each broker error code is answered with: the one place a
 * code meets the transport (domain errors carry codes only). A Record, so a
 * code added to broker/protocol/codes.ts does not compile until it has a status.
 */
export const HTTP_STATUS: Readonly<Record<BrokerErrorCode, 202 | 400 | 401 | 403 | 404 | 405 | 409 | 413 | 429 | 500 | 502 | 503>> = {
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
  /** A delegation token that is not the broker's (forged, altered, unknown id) or not for this broker. */
  DELEGATION_INVALID: 401,
  DELEGATION_EXPIRED: 401,
  /** Every use the delegation allowed is spent (or reserved by sub-delegations). */
  DELEGATION_EXHAUSTED: 403,
  /** The delegation, or one it was derived from, is revoked. */
  DELEGATION_REVOKED: 403,
  /** Asks more than the delegation allows: a name outside it, a longer TTL, more uses, a deeper chain. */
  DELEGATION_NOT_ALLOWED: 403,
  /** The presenting enclave's measurements are not the delegation's audience. */
  AUDIENCE_MISMATCH: 403,
  /** Gateway: no valid gateway token, or the connection is not bound to the token's key. */
  GATEWAY_TOKEN_INVALID: 401,
  CHANNEL_BINDING_INVALID: 401,
  /** Gateway per-call policy refusals: 403 with the reason in the code (never retried by SDKs). */
  ROUTE_DENIED: 403,
  BODY_TOO_LARGE: 403,
  BUDGET_EXCEEDED: 403,
  UPSTREAM_STATUS_DENIED: 403,
  /** Gateway: the upstream could not be reached or failed TLS validation. */
  UPSTREAM_UNAVAILABLE: 502,
  /** Human approval: accepted, nothing released; the body names the pending request(s). */
  APPROVAL_PENDING: 202,
  APPROVAL_DENIED: 403,
  APPROVAL_EXPIRED: 403,
  /** The (single-use) approval was used by a concurrent request of the same enclave. */
  APPROVAL_CONSUMED: 409,
};

/**
 * Codes of the admin API (`/v1/admin/...`, broker/admin-api): token and scope refusals, and the
 * codes of the store operations it runs (broker/ops/errors.ts, broker/admin.ts), each with its status.
 */
export const ADMIN_HTTP_STATUS = {
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  UNAVAILABLE: 503,
  BAD_REQUEST: 400,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  PAYLOAD_TOO_LARGE: 413,
  ADMIN_REFUSED: 409,
  SCHEMA_INVALID: 400,
  INPUT_UNREADABLE: 400,
  INPUT_INVALID: 400,
  BASELINE_INVALID: 400,
  KEY_UNUSABLE: 400,
  ALREADY_EXISTS: 409,
  BASELINE_NOT_FOUND: 404,
  BASELINE_CONFLICT: 409,
  NOT_BOUND: 404,
  NOT_REVOKED: 409,
  STORE_ENTRY_INVALID: 409,
  LOCAL_PROVIDER_REFUSED: 400,
  KMS_UNAVAILABLE: 503,
  SECRET_UNAVAILABLE: 500,
  STORE_UNAVAILABLE: 503,
  STORE_LOCKED: 503,
  AUDIT_UNAVAILABLE: 503,
  INTERNAL_ERROR: 500,
} as const satisfies Readonly<Record<string, 400 | 401 | 403 | 404 | 405 | 409 | 413 | 500 | 503>>;

export type AdminApiErrorCode = keyof typeof ADMIN_HTTP_STATUS;
