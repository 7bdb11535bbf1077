import type { NonceRegistry, NonceUse } from './registry.js';

/**
 * The nonce registry of one broker: used nonces in a Map until they expire.
 * Single use per process only (replicas each have their own). Memory is
 * bounded: when `maxRemembered` unexpired nonces are held, a new one is
 * refused as `busy` rather than forgetting one still inside its lifetime.
 */
export class MemoryNonceRegistry implements NonceRegistry {
  readonly #used = new Map<string, number>();
  readonly #max: number;

  constructor(maxRemembered = 200_000) {
    this.#max = maxRemembered;
  }

  consume(id: string, rememberUntil: number, now: number): Promise<NonceUse> {
    return Promise.resolve(this.#consume(id, rememberUntil, now));
  }

  // Synchronous on purpose: no await between the lookup and the insert, so concurrent requests cannot both win.
  #consume(id: string, rememberUntil: number, now: number): NonceUse {
    if (this.#used.has(id)) return 'used';
    if (this.#used.size >= this.#max) {
      this.#prune(now);
      if (this.#used.size >= this.#max) return 'busy';
    }
    this.#used.set(id, rememberUntil);
    if (this.#used.size % 1024 === 0) this.#prune(now);
    return 'fresh';
  }

  #prune(now: number): void {
    for (const [id, until] of this.#used) if (until < now) this.#used.delete(id);
  }

  /** Nonces currently remembered. */
  get remembered(): number {
    return this.#used.size;
  }

  /** Always ready: it lives in this process. */
  async check(): Promise<void> {}

  close(): void {}
}
