import type { StoreProblem } from './store.js';

/**
 * The entries of a store currently failing validation, shared by every
 * backend: a problem is reported once (again only when its message changes)
 * and forgotten when its entry loads again or disappears.
 */
export class StoreProblems {
  readonly #byEntry = new Map<string, StoreProblem>();

  constructor(private readonly onProblem: (problem: StoreProblem) => void) {}

  /** Records that `entry` fails with `message`; returns the problem (the same object while the message stays). */
  report(entry: string, message: string): StoreProblem {
    const previous = this.#byEntry.get(entry);
    if (previous?.message === message) return previous;
    const problem = { file: entry, message };
    this.#byEntry.set(entry, problem);
    this.onProblem(problem);
    return problem;
  }

  get(entry: string): StoreProblem | undefined {
    return this.#byEntry.get(entry);
  }

  clear(entry: string): void {
    this.#byEntry.delete(entry);
  }

  /** Forgets every problem whose entry `keep` rejects (entries that no longer exist). */
  retain(keep: (entry: string) => boolean): void {
    for (const entry of [...this.#byEntry.keys()]) if (!keep(entry)) this.#byEntry.delete(entry);
  }

  list(): readonly StoreProblem[] {
    return [...this.#byEntry.values()];
  }
}
