import type { InputSource } from './input.js';

/** Everything a command touches outside its arguments, so tests can run it in-process. */
export interface CliIo extends InputSource {
  out(text: string): void;
  err(text: string): void;
}

/** The real process streams. */
export function processIo(): CliIo {
  return {
    out: (text) => void process.stdout.write(text),
    err: (text) => void process.stderr.write(text),
    stdin: () => process.stdin,
  };
}
