/** Per-client, per-identity and per-secret rates and the quarantine threshold (config `rateLimits`; 0 disables a limit). */
export interface RateLimitSettings {
  readonly perClientPerSecond: number;
  readonly perIdentityPerSecond: number;
  readonly perSecretPerSecond: number;
  readonly quarantineAfterDenials: number;
  readonly quarantineWindowSeconds: number;
  readonly quarantineSeconds: number;
}

export const DEFAULT_RATE_LIMITS: RateLimitSettings = {
  perClientPerSecond: 200,
  perIdentityPerSecond: 20,
  perSecretPerSecond: 1000,
  quarantineAfterDenials: 10,
  quarantineWindowSeconds: 60,
  quarantineSeconds: 300,
};

/** Token buckets keyed by string, with bounded memory. */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  /**
   * @param perSecond - sustained rate; 0 disables the limit
   * @param burst - bucket size
   * @param maxKeys - keys tracked at once; the oldest is dropped beyond it
   */
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly maxKeys = 100_000,
  ) {}

  /** Takes one token for `key`; false when the key is over its rate. */
  take(key: string, now: number): boolean {
    if (this.perSecond <= 0) return true;
    let bucket = this.#buckets.get(key);
    if (bucket) {
      // A wall clock stepped backwards refills nothing but restarts the count from now (never a drain).
      bucket.tokens = Math.min(this.burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * this.perSecond);
      bucket.at = now;
      this.#buckets.delete(key); // re-insert: Map order doubles as LRU order
    } else {
      bucket = { tokens: this.burst, at: now };
    }
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > this.maxKeys) this.#buckets.delete(this.#buckets.keys().next().value as string);
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}

/**
 * Where quarantine state lives. Today: this process (Quarantine below). The
 * signatures may return promises so a shared backend (one table for every
 * replica) can implement them; callers always await. A shared implementation
 * must fail closed: if it cannot tell, isQuarantined throws (nothing released).
 */
export interface QuarantineStore {
  /** Whether `identity` is refused outright at `now`. */
  isQuarantined(identity: string, now: number): boolean | Promise<boolean>;
  /** One policy denial for `identity` at `now`; enough of them within the window quarantine it. */
  recordDenial(identity: string, now: number): void | Promise<void>;
}

/**
 * Repeated policy denials from one enclave identity look like probing:
 * after `threshold` denials within `windowMs` the identity is refused
 * outright for `quarantineMs`. In memory: per replica.
 */
export class Quarantine implements QuarantineStore {
  readonly #denials = new Map<string, number[]>();
  readonly #until = new Map<string, number>();

  constructor(
    private readonly threshold: number,
    private readonly windowMs: number,
    private readonly quarantineMs: number,
    private readonly maxKeys = 100_000,
  ) {}

  isQuarantined(identity: string, now: number): boolean {
    let until = this.#until.get(identity);
    if (until === undefined) return false;
    // A wall clock stepped backwards must not stretch the quarantine beyond its length from now.
    if (until - now > this.quarantineMs) this.#until.set(identity, (until = now + this.quarantineMs));
    if (until > now) return true;
    this.#until.delete(identity);
    return false;
  }

  recordDenial(identity: string, now: number): void {
    if (this.threshold <= 0) return;
    const recent = (this.#denials.get(identity) ?? []).filter((t) => t > now - this.windowMs);
    recent.push(now);
    this.#denials.delete(identity);
    if (recent.length >= this.threshold) {
      this.#until.set(identity, now + this.quarantineMs);
      if (this.#until.size > this.maxKeys) this.#until.delete(this.#until.keys().next().value as string);
    } else {
      this.#denials.set(identity, recent);
      if (this.#denials.size > this.maxKeys) this.#denials.delete(this.#denials.keys().next().value as string);
    }
  }
}
