/**
 * Short-lived cache of decrypted secret values, so a fleet of enclaves
 * re-attesting every TTL does not call KMS for each request. Entries are
 * keyed by secret, version and ciphertext, so a rotation or re-bind misses
 * at once; `retain` drops entries whose binding changed or disappeared.
 */
export class SecretCache {
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #entries = new Map<string, { value: Uint8Array; expires: number }>();

  /** @param ttlMs - 0 disables caching */
  constructor(ttlMs: number, max = 1000) {
    this.#ttlMs = ttlMs;
    this.#max = max;
  }

  static key(secret: string, version: number, ciphertext: string): string {
    return `${secret}\0${version}\0${ciphertext}`;
  }

  get(key: string, now: number): Uint8Array | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expires <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key: string, value: Uint8Array, now: number): void {
    if (this.#ttlMs <= 0) return;
    this.#entries.delete(key);
    this.#entries.set(key, { value, expires: now + this.#ttlMs });
    if (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.get(oldest)?.value.fill(0);
      this.#entries.delete(oldest);
    }
  }

  /** Keeps only entries whose key is in `current` (called when the store changes). */
  retain(current: ReadonlySet<string>): void {
    for (const [key, entry] of this.#entries) {
      if (!current.has(key)) {
        entry.value.fill(0);
        this.#entries.delete(key);
      }
    }
  }

  get size(): number {
    return this.#entries.size;
  }
}
