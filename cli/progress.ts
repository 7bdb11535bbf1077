/**
 * A progress line on the terminal while a large file is read (`describe-eif`, `record --eif`): on stderr,
 * redrawn in place, throttled, and erased when done, so the terminal is left with the command's output only.
 * Never when output is piped or captured, never with --json: scripts get exactly the bytes they always got.
 */
import type { CliIo } from './io.js';

/** Files smaller than this are read too fast to need a progress line. */
export const PROGRESS_MIN_BYTES = 16 * 1024 * 1024;
/** At most one redraw per this many milliseconds. */
export const PROGRESS_INTERVAL_MS = 100;

export interface ProgressContext {
  /** Whether stdout and stderr are terminals. */
  readonly stdoutIsTTY: boolean;
  readonly stderrIsTTY: boolean;
  /** $TERM: "dumb" terminals cannot redraw a line. */
  readonly term: string | undefined;
  /** --json was given: the output is for a program. */
  readonly json: boolean;
  readonly totalBytes: number;
}

/**
 * Whether to show progress: both streams are terminals (piping or redirecting either one means a program or
 * a file is reading), the terminal can redraw a line, no --json, and the file is large.
 */
export function shouldShowProgress(c: ProgressContext): boolean {
  return c.stdoutIsTTY && c.stderrIsTTY && c.term !== 'dumb' && !c.json && c.totalBytes >= PROGRESS_MIN_BYTES;
}

const MIB = 1024 * 1024;
/** Erases the current terminal line. */
const CLEAR_LINE = '\r\x1b[K';

/** The text of one progress line. */
export function progressLine(label: string, done: number, total: number): string {
  const percent = total > 0 ? Math.min(100, Math.floor((done / total) * 100)) : 100;
  return `${label}: ${String(percent).padStart(3)}% (${(done / MIB).toFixed(1)} of ${(total / MIB).toFixed(1)} MiB)`;
}

/** Draws progress lines through `write`: the first at once, then at most one per `intervalMs` (by `now`). */
export class ProgressMeter {
  #lastDrawn = -Infinity;
  #drawn = false;
  constructor(
    private readonly write: (text: string) => void,
    private readonly label: string,
    private readonly now: () => number = () => performance.now(),
    private readonly intervalMs: number = PROGRESS_INTERVAL_MS,
  ) {}

  update(done: number, total: number): void {
    const t = this.now();
    if (this.#drawn && t - this.#lastDrawn < this.intervalMs && done < total) return;
    this.#lastDrawn = t;
    this.#drawn = true;
    this.write(`${CLEAR_LINE}${progressLine(this.label, done, total)}`);
  }

  /** Erases the line (also after a failure), so what follows starts on a clean line. */
  end(): void {
    if (this.#drawn) this.write(CLEAR_LINE);
    this.#drawn = false;
  }
}

/**
 * A progress callback for reading `file`, or undefined when no progress is to be shown. The size is
 * judged on the first call, when the reader knows it.
 */
export function progressFor(io: CliIo, file: string, options: { readonly json: boolean }): { onProgress: (done: number, total: number) => void; end: () => void } | undefined {
  const terminal = io.terminal;
  if (!terminal) return undefined;
  const base = { stdoutIsTTY: terminal.stdout, stderrIsTTY: terminal.stderr, term: terminal.term, json: options.json };
  if (!shouldShowProgress({ ...base, totalBytes: PROGRESS_MIN_BYTES })) return undefined;
  const meter = new ProgressMeter((text) => io.err(text), `reading ${file}`);
  let show: boolean | undefined;
  return {
    onProgress: (done, total) => {
      show ??= shouldShowProgress({ ...base, totalBytes: total });
      if (show) meter.update(done, total);
    },
    end: () => meter.end(),
  };
}
