/**
 * A problem with how the command was called, with its input files, or with
 * what it was asked to do: exit status 2. `hint` adds a pointer to --help.
 */
export class UsageError extends Error {
  override readonly name = 'UsageError';
  readonly hint: boolean;

  constructor(message: string, options: { hint?: boolean } = {}) {
    super(message);
    this.hint = options.hint ?? true;
  }
}
