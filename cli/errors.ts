import { CodedError } from '../lib/coded-error.js';
import { OperationError, type OperationErrorCode } from '../broker/ops/errors.js';

/**
 * A problem with how the command was called, with its input files, or with
 * what it was asked to do: exit status 2. `hint` adds a pointer to --help.
 */
export class UsageError extends CodedError<'USAGE'> {
  override readonly name = 'UsageError';
  readonly hint: boolean;

  constructor(message: string, options: { hint?: boolean } = {}) {
    super('USAGE', message);
    this.hint = options.hint ?? true;
  }
}

/**
 * An operation's refusal as the CLI reports it (exit 2); anything else is
 * returned unchanged. `decorate` puts a code's message in the command's words
 * (the flag that named the file, what to do about it). A baseline that fails
 * validation is not a usage mistake: no --help pointer.
 */
export function usageError(err: unknown, decorate: Partial<Record<OperationErrorCode, (message: string) => string>> = {}): unknown {
  if (!(err instanceof OperationError)) return err;
  return new UsageError(decorate[err.code]?.(err.message) ?? err.message, { hint: err.code !== 'BASELINE_INVALID' });
}

/** Why the listen address cannot be bound, in words, or undefined for any other failure. */
export function listenProblem(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EADDRINUSE') return 'address already in use (another broker or process listens there; choose another port)';
  if (code === 'EACCES') return 'permission denied (ports below 1024 need privileges; choose another port)';
  if (code === 'EADDRNOTAVAIL') return 'address not available on this machine';
  return undefined;
}
