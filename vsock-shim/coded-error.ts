/** An error with a stable machine-readable `code` (and an optional `cause`), base of the enclave-side errors. */
export class CodedError<C extends string = string> extends Error {
  constructor(
    readonly code: C,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
