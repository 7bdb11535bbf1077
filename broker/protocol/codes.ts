/**
 * The stable codes of attestation verification (broker/verify's
 * `AttestationError`): declared here, once, because they are also the first
 * codes of the broker API below, and broker/verify imports this dependency-free
 * module. Callers (the broker, the CLI, scripts parsing `--json`) branch on
 * these strings, so they never change meaning once published.
 */
export const ATTESTATION_ERROR_CODES = [
  'MALFORMED_COSE',
  'UNSUPPORTED_ALG',
  'MALFORMED_PAYLOAD',
  'CERT_CHAIN_INVALID',
  'UNTRUSTED_ROOT',
  'CERT_EXPIRED',
  'BAD_SIGNATURE',
  'DOC_EXPIRED',
  'NONCE_MISMATCH',
  'PCR_MISMATCH',
  'DEBUG_MODE',
] as const;

/**
 * The error codes the broker API answers with (`{ error: { code, message } }`),
 * design.md section 2. The broker's own error type is built on this list (so
 * the two cannot drift), and the agent passes through only these: an error
 * body is unauthenticated (any relay can write one), so a code outside this
 * list, such as one of the agent's own verdicts, is never taken from it.
 */
export const BROKER_ERROR_CODES = [
  // attestation verification (broker/verify)
  ...ATTESTATION_ERROR_CODES,
  // policy, abuse controls, dependencies
  'UNKNOWN_SECRET',
  'POLICY_DENIED',
  'RATE_LIMITED',
  'QUARANTINED',
  'REVOKED',
  'KMS_UNAVAILABLE',
  'STORE_UNAVAILABLE',
  'SECRET_UNAVAILABLE',
  'BAD_REQUEST',
  'NOT_FOUND',
  'METHOD_NOT_ALLOWED',
  'PAYLOAD_TOO_LARGE',
  'INTERNAL_ERROR',
  // delegation (broker/delegation): a token that is not the broker's, or no longer usable
  'DELEGATION_INVALID',
  'DELEGATION_EXPIRED',
  'DELEGATION_EXHAUSTED',
  'DELEGATION_REVOKED',
  'DELEGATION_NOT_ALLOWED',
  'AUDIENCE_MISMATCH',
  // the credential gateway (broker/gateway): token, channel binding, per-call policy, upstream
  'GATEWAY_TOKEN_INVALID',
  'CHANNEL_BINDING_INVALID',
  'ROUTE_DENIED',
  'BODY_TOO_LARGE',
  'BUDGET_EXCEEDED',
  'UPSTREAM_STATUS_DENIED',
  'UPSTREAM_UNAVAILABLE',
  // human approval (broker/approval): the 202 answer, and the request's end
  'APPROVAL_PENDING',
  'APPROVAL_DENIED',
  'APPROVAL_EXPIRED',
  'APPROVAL_CONSUMED',
] as const;

export type BrokerErrorCode = (typeof BROKER_ERROR_CODES)[number];

const KNOWN: ReadonlySet<string> = new Set(BROKER_ERROR_CODES);

export function isBrokerErrorCode(value: unknown): value is BrokerErrorCode {
  return typeof value === 'string' && KNOWN.has(value);
}
