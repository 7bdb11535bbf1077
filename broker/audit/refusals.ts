import { RateLimiter } from '../rate-limit.js';
import type { DecisionRecord } from './sink.js';

/** How many refusals are written one record each; the rest are counted into summaries. */
export interface RefusalSettings {
  /** Individual refusal records per client: sustained rate and bucket size. */
  readonly perClientPerSecond: number;
  readonly perClientBurst: number;
  /** Individual refusal records across all clients (many addresses cannot multiply the budget). */
  readonly globalPerSecond: number;
  readonly globalBurst: number;
  /** Distinct (client, code) pairs one summary lists; further ones are only counted in `otherCount`. */
  readonly maxSummaryEntries: number;
  /** How often a summary of the counted refusals is written (also on close). */
  readonly summaryIntervalMs: number;
}

export const DEFAULT_REFUSAL_SETTINGS: RefusalSettings = {
  perClientPerSecond: 1,
  perClientBurst: 10,
  globalPerSecond: 10,
  globalBurst: 20,
  maxSummaryEntries: 256,
  summaryIntervalMs: 60_000,
};

/** The body of a `type: "summary"` audit record. */
export interface RefusalSummary {
  readonly time: string;
  /** When the first refusal counted here happened. */
  readonly since: string;
  readonly refused: ReadonlyArray<{ readonly client: string; readonly code: string; readonly count: number }>;
  /** Refusals from (client, code) pairs beyond `maxSummaryEntries`. */
  readonly otherCount: number;
}

/**
 * Keeps refusals of unauthenticated or unverified input from filling the
 * audit disk: each client gets a small token bucket of individual records
 * (and all clients together a global one); beyond it a refusal only bumps a
 * counter per (client, code), written as one bounded summary record per
 * interval. The audit then grows by at most a few records per second
 * whatever the request rate.
 */
export class RefusalSampler {
  readonly #settings: RefusalSettings;
  readonly #perClient: RateLimiter;
  readonly #global: RateLimiter;
  #counts = new Map<string, { client: string; code: string; count: number }>();
  #other = 0;
  #since: number | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    settings: Partial<RefusalSettings>,
    private readonly clock: () => number,
    private readonly write: (summary: RefusalSummary) => Promise<void>,
  ) {
    this.#settings = { ...DEFAULT_REFUSAL_SETTINGS, ...settings };
    this.#perClient = new RateLimiter(this.#settings.perClientPerSecond, this.#settings.perClientBurst, 10_000);
    this.#global = new RateLimiter(this.#settings.globalPerSecond, this.#settings.globalBurst, 1);
  }

  /** True: write this refusal as its own record. False: it was counted for the next summary. */
  take(record: DecisionRecord): boolean {
    const now = this.clock();
    if (this.#perClient.take(record.client, now) && this.#global.take('*', now)) return true;
    this.#count(record.client, record.code, 1, now);
    return false;
  }

  #count(client: string, code: string, n: number, now: number): void {
    this.#since ??= now;
    const key = `${client}\u0000${code}`;
    const entry = this.#counts.get(key);
    if (entry) entry.count += n;
    else if (this.#counts.size < this.#settings.maxSummaryEntries) this.#counts.set(key, { client, code, count: n });
    else this.#other += n;
    if (!this.#timer) {
      this.#timer = setInterval(() => void this.flush().catch(() => {}), this.#settings.summaryIntervalMs);
      this.#timer.unref();
    }
  }

  /** Writes what has been counted as one summary record (nothing when nothing was counted). */
  async flush(): Promise<void> {
    if (this.#since === undefined) return;
    const counts = [...this.#counts.values()];
    const other = this.#other;
    const since = this.#since;
    this.#counts = new Map();
    this.#other = 0;
    this.#since = undefined;
    try {
      await this.write({ time: new Date(this.clock()).toISOString(), since: new Date(since).toISOString(), refused: counts, otherCount: other });
    } catch (err) {
      // Not written: keep the counts for the next summary.
      for (const c of counts) this.#count(c.client, c.code, c.count, since);
      this.#other += other;
      if (other) this.#since ??= since;
      throw err;
    }
  }

  /**
   * Stops the periodic summary. Refusals counted but not yet written are
   * dropped and returned (undefined: none), so the caller can log them: a
   * summary lost on close or abandon must leave a trace somewhere.
   */
  stop(): { readonly refusals: number; readonly since: string } | undefined {
    clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#since === undefined) return undefined;
    const refusals = [...this.#counts.values()].reduce((n, c) => n + c.count, this.#other);
    const since = new Date(this.#since).toISOString();
    this.#counts = new Map();
    this.#other = 0;
    this.#since = undefined;
    return { refusals, since };
  }
}
