import { CodedError } from '../../lib/coded-error.js';

/**
 * Stable error codes for attestation verification. Callers (the broker, the
 * CLI, scripts parsing `--json`) branch on these strings, so they never change
 * meaning once published.
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

/** One of {@link ATTESTATION_ERROR_CODES}. */
export type AttestationErrorCode = (typeof ATTESTATION_ERROR_CODES)[number];

/**
 * The only error `verifyAttestation` throws for bad input. `code` is stable;
 * `message` is for humans and may change; `cause` keeps a lower-level error
 * (for example from the CBOR decoder) when there was one.
 */
export class AttestationError extends CodedError<AttestationErrorCode> {
  override readonly name = 'AttestationError';
}

/** True when `value` is an {@link AttestationError} (also across duplicate copies of this module). */
export function isAttestationError(value: unknown): value is AttestationError {
  if (value instanceof AttestationError) return true;
  if (!(value instanceof Error) || value.name !== 'AttestationError') return false;
  const code: unknown = (value as Error & { code?: unknown }).code;
  return typeof code === 'string' && (ATTESTATION_ERROR_CODES as readonly string[]).includes(code);
}
