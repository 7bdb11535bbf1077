/**
 * Short-lived cache of decrypted secret values, so a fleet of enclaves
 * re-attesting every TTL does not call KMS for each request. Entries are
 * keyed by secret, version and ciphertext, so a rotation or re-bind misses
 * at once; `retain` drops entries whose binding changed or disappeared.
 *
 * Ownership: the cache keeps its own copy of every value and hands out
 * copies. It wipes only its own copies (on eviction, `retain`, `dropKey`,
 * expiry), and a caller wipes the copy it got once done with it, so no
 * interleaving of rotation, eviction and in-flight requests can change a
 * value some request is still sealing.
 */
export class SecretCache {
  readonly #ttlMs: number;
  readonly #max: number;
  readonly #entries = new Map<string, { value: Uint8Array; expires: number; keyTag: string | undefined }>();
  /** How often each key was dropped: a decrypt that started before a drop must not cache its value after it. */
  readonly #drops = new Map<string, number>();

  /** @param ttlMs - 0 disables caching */
  constructor(ttlMs: number, max = 1000) {
    this.#ttlMs = ttlMs;
    this.#max = max;
  }

  static key(secret: string, version: number, ciphertext: string): string {
    return `${secret}\0${version}\0${ciphertext}`;
  }

  /** A copy of the cached value, owned by the caller (who should wipe it after use). */
  get(key: string, now: number): Uint8Array | undefined {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expires <= now) {
      this.#delete(key);
      return undefined;
    }
    return entry.value.slice();
  }

  /** A marker to take before decrypting under `keyTag` and hand to `set`: it tells whether the key was dropped meanwhile. */
  keyEpoch(keyTag: string | undefined): number {
    return keyTag === undefined ? 0 : (this.#drops.get(keyTag) ?? 0);
  }

  /**
   * Caches a copy of `value`; the caller keeps ownership of `value` itself.
   *
   * @param keyTag - the provider key the value was decrypted under, for `dropKey`
   * @param epoch - `keyEpoch(keyTag)` taken before the decrypt: if the key was dropped since, nothing is cached
   */
  set(key: string, value: Uint8Array, now: number, keyTag?: string, epoch?: number): void {
    if (this.#ttlMs <= 0) return;
    if (epoch !== undefined && epoch !== this.keyEpoch(keyTag)) return;
    this.#delete(key);
    this.#entries.set(key, { value: value.slice(), expires: now + this.#ttlMs, keyTag });
    if (this.#entries.size > this.#max) this.#delete(this.#entries.keys().next().value as string);
  }

  /** Keeps only entries whose key is in `current` (called when the store changes). */
  retain(current: ReadonlySet<string>): void {
    for (const key of [...this.#entries.keys()]) if (!current.has(key)) this.#delete(key);
  }

  /** Drops every value decrypted under `keyTag` (its key was disabled or deleted). Returns how many. */
  dropKey(keyTag: string): number {
    this.#drops.set(keyTag, this.keyEpoch(keyTag) + 1);
    let dropped = 0;
    for (const [key, entry] of [...this.#entries]) {
      if (entry.keyTag === keyTag) {
        this.#delete(key);
        dropped++;
      }
    }
    return dropped;
  }

  #delete(key: string): void {
    this.#entries.get(key)?.value.fill(0);
    this.#entries.delete(key);
  }
}
