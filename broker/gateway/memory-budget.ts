import { BudgetUnavailableError, type BudgetCounter } from './budget.js';

/**
 * Budgets of one broker: a count per key and window in a Map (replicas each count their own). Bounded:
 * past `maxKeys` live windows, a new key is refused (BudgetUnavailableError) rather than forgetting a
 * count still in its window, which would hand out a fresh budget.
 */
export class MemoryBudgetCounter implements BudgetCounter {
  readonly #counts = new Map<string, { count: number; until: number }>();
  readonly #max: number;

  constructor(maxKeys = 100_000) {
    this.#max = maxKeys;
  }

  // Synchronous between read and write: concurrent calls cannot both take the last unit.
  take(key: string, windowStart: number, windowMs: number, limit: number): Promise<boolean> {
    const id = `${key}#${windowStart}`;
    let entry = this.#counts.get(id);
    if (!entry) {
      if (this.#counts.size >= this.#max) this.#prune(windowStart);
      if (this.#counts.size >= this.#max) return Promise.reject(new BudgetUnavailableError('too many budget windows in memory', { storeError: 'MemoryFull' }));
      entry = { count: 0, until: windowStart + windowMs };
      this.#counts.set(id, entry);
    }
    if (entry.count >= limit) return Promise.resolve(false);
    entry.count++;
    return Promise.resolve(true);
  }

  #prune(now: number): void {
    for (const [id, entry] of this.#counts) if (entry.until <= now) this.#counts.delete(id);
  }

  async check(): Promise<void> {}

  close(): void {}
}
