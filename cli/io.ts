import type { InputSource } from './input.js';

/** Everything a command touches outside its arguments, so tests can run it in-process. */
export interface CliIo extends InputSource {
  out(text: string): void;
  err(text: string): void;
  /** Whether stdout and stderr are terminals, and $TERM (absent: neither is; e.g. captured output in tests). Decides progress lines. */
  readonly terminal?: { readonly stdout: boolean; readonly stderr: boolean; readonly term: string | undefined };
}

/** The real process streams. */
export function processIo(): CliIo {
  return {
    out: (text) => void process.stdout.write(text),
    err: (text) => void process.stderr.write(text),
    stdin: () => process.stdin,
    terminal: { stdout: Boolean(process.stdout.isTTY), stderr: Boolean(process.stderr.isTTY), term: process.env.TERM },
  };
}
