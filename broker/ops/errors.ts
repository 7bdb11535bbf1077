import { CodedError } from '../../lib/coded-error.js';

/**
 * Why an operation could not run on what it was given. Callers map the code
 * to their own answer (the CLI: exit 2; an admin API: a 4xx); messages name
 * the file but no caller vocabulary (flags, routes).
 *
 * - INPUT_UNREADABLE: an input file cannot be read or parsed as JSON
 * - INPUT_INVALID: an input file is readable but not in an accepted format
 * - BASELINE_INVALID: a baseline file fails validation
 * - KEY_UNUSABLE: a private key file cannot be read or is not an Ed25519 key
 * - ALREADY_EXISTS: the operation would overwrite a file it must not replace
 * - BASELINE_NOT_FOUND: no baseline of that name (in the store, or as a file)
 * - BASELINE_CONFLICT: the store holds another build under that name
 * - NOT_BOUND: no binding for that secret
 * - NOT_REVOKED: an un-revocation names something that is not revoked
 * - STORE_ENTRY_INVALID: the store entry the operation would change fails validation (fix or restore it first)
 */
export type OperationErrorCode =
  | 'INPUT_UNREADABLE'
  | 'INPUT_INVALID'
  | 'BASELINE_INVALID'
  | 'KEY_UNUSABLE'
  | 'ALREADY_EXISTS'
  | 'BASELINE_NOT_FOUND'
  | 'BASELINE_CONFLICT'
  | 'NOT_BOUND'
  | 'NOT_REVOKED'
  | 'STORE_ENTRY_INVALID';

export class OperationError extends CodedError<OperationErrorCode> {
  override readonly name = 'OperationError';
}

/** The short reason an input could not be read: the errno code, else the message. */
export function unreadable(path: string, cause: unknown, what = ''): OperationError {
  const reason = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
  return new OperationError('INPUT_UNREADABLE', `cannot read ${what}${path}: ${reason}`, { cause });
}
