/** Minimal Prometheus text-format metrics: labelled counters and histograms. */

type Labels = Readonly<Record<string, string>>;

function labelText(labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

class Counter {
  readonly #values = new Map<string, number>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    this.#values.set(key, (this.#values.get(key) ?? 0) + by);
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.#values.size === 0) lines.push(`${this.name} 0`);
    for (const [labels, value] of this.#values) lines.push(`${this.name}${labels} ${value}`);
    return lines.join('\n');
  }
}

class Histogram {
  readonly #counts: number[];
  #sum = 0;
  #count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {
    this.#counts = buckets.map(() => 0);
  }
  observe(value: number): void {
    this.#sum += value;
    this.#count++;
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) this.#counts[i]!++;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket{le="${b}"} ${this.#counts[i]}`));
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.#count}`, `${this.name}_sum ${this.#sum}`, `${this.name}_count ${this.#count}`);
    return lines.join('\n');
  }
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export interface BrokerMetricsOptions {
  /**
   * Label releases with the secret's name. Off by default: /metrics is served
   * unauthenticated on the API listener, and names reveal which secrets exist.
   */
  readonly secretLabels?: boolean;
}

/** The broker's metrics. */
export class BrokerMetrics {
  readonly #secretLabels: boolean;
  readonly releases: Counter;
  readonly denials = new Counter('keygate_denials_total', 'Requests denied, by code returned to the caller.');
  readonly verifySeconds = new Histogram('keygate_verify_seconds', 'Attestation verification time.', LATENCY_BUCKETS);
  readonly kmsSeconds = new Histogram('keygate_kms_seconds', 'Key provider decrypt time.', LATENCY_BUCKETS);
  readonly requestSeconds = new Histogram('keygate_release_request_seconds', 'POST /v1/secrets handling time.', LATENCY_BUCKETS);
  readonly cache = new Counter('keygate_secret_cache_total', 'Secret value cache lookups, by result.');
  readonly storeProblems = new Counter('keygate_store_problems_total', 'Store files that failed validation on load.');
  readonly droppedConnections = new Counter('keygate_connections_dropped_total', 'Client connections closed on accept because maxConnections were open.');

  constructor(options: BrokerMetricsOptions = {}) {
    this.#secretLabels = options.secretLabels ?? false;
    this.releases = new Counter('keygate_releases_total', this.#secretLabels ? 'Secrets released, by secret.' : 'Secrets released.');
  }

  /** Counts one released secret; its name becomes a label only when secretLabels is on. */
  released(secret: string): void {
    this.releases.inc(this.#secretLabels ? { secret } : {});
  }

  render(): string {
    return `${[this.releases, this.denials, this.verifySeconds, this.kmsSeconds, this.requestSeconds, this.cache, this.storeProblems, this.droppedConnections]
      .map((m) => m.render())
      .join('\n')}\n`;
  }
}
