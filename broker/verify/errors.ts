import { CodedError } from '../../lib/coded-error.js';
import { ATTESTATION_ERROR_CODES } from '../protocol/codes.js';

// The list itself lives in broker/protocol/codes.ts, the one dependency-free
// module verify may import: the broker API answers with the same codes, so one
// declaration serves both and they cannot drift.
export { ATTESTATION_ERROR_CODES };

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
