/**
 * The one error base of the project: every error class keygate defines
 * extends it (test/architecture.test.ts checks). `code` is stable and
 * machine-readable (callers branch on it); `message` is for humans and may
 * change; `cause` keeps the lower-level error, when there was one.
 *
 * Errors carry no transport vocabulary: an HTTP status, an exit status or a
 * `--help` pointer is chosen from the code where the answer is written
 * (broker/http-status.ts for the HTTP API, cli/main.ts for the CLI).
 *
 * A leaf module, like the rest of lib/: it imports nothing, so every part
 * (broker/verify included, which otherwise imports only its own files) may
 * extend it.
 */
export class CodedError<C extends string = string> extends Error {
  constructor(
    readonly code: C,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
