/**
 * The broker's Prometheus metrics, through prom-client: labelled counters and histograms on a registry
 * of the broker's own (two brokers in one process count separately), plus prom-client's process,
 * GC and event-loop metrics.
 */
import { Counter as PromCounter, Histogram as PromHistogram, Registry, collectDefaultMetrics } from 'prom-client';

type Labels = Readonly<Record<string, string>>;

/** A counter; `render()` gives its Prometheus text. */
class Counter {
  readonly #metric: PromCounter<string>;
  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
    labelNames: readonly string[] = [],
  ) {
    this.#metric = new PromCounter({ name, help, labelNames, registers: [registry] });
  }
  inc(labels: Labels = {}, by = 1): void {
    this.#metric.inc(labels, by);
  }
  async render(): Promise<string> {
    return renderOne(this.#metric);
  }
}

/** A histogram (seconds); `render()` gives its Prometheus text. */
class Histogram {
  readonly #metric: PromHistogram<string>;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
    registry: Registry,
  ) {
    this.#metric = new PromHistogram({ name, help, buckets: [...buckets], registers: [registry] });
  }
  observe(value: number): void {
    this.#metric.observe(value);
  }
  async render(): Promise<string> {
    return renderOne(this.#metric);
  }
}

async function renderOne(metric: PromCounter<string> | PromHistogram<string>): Promise<string> {
  const one = new Registry();
  one.registerMetric(metric);
  return one.metrics();
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

let processRegistry: Registry | undefined;

/**
 * The process, GC and event-loop metrics (process_cpu_seconds_total, nodejs_eventloop_lag_seconds,
 * nodejs_gc_duration_seconds, ...): one set per process, on a registry of keygate's own (never
 * prom-client's global one, which an embedding application may use). They describe the process, so
 * every broker in it shows the same values; and prom-client cannot stop their collectors (a GC
 * observer and an event-loop timer each), so they are started once, not once per broker.
 */
function defaultMetricsRegistry(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

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
  readonly #registry = new Registry();
  readonly releases: Counter;
  readonly denials = new Counter('keygate_denials_total', 'Requests denied, by code returned to the caller.', this.#registry, ['code']);
  readonly verifySeconds = new Histogram('keygate_verify_seconds', 'Attestation verification time.', LATENCY_BUCKETS, this.#registry);
  readonly kmsSeconds = new Histogram('keygate_kms_seconds', 'Key provider decrypt time.', LATENCY_BUCKETS, this.#registry);
  readonly requestSeconds = new Histogram('keygate_release_request_seconds', 'POST /v1/secrets handling time.', LATENCY_BUCKETS, this.#registry);
  readonly cache = new Counter('keygate_secret_cache_total', 'Secret value cache lookups, by result.', this.#registry, ['result']);
  readonly storeProblems = new Counter('keygate_store_problems_total', 'Store files that failed validation on load.', this.#registry);
  readonly droppedConnections = new Counter('keygate_connections_dropped_total', 'Client connections closed on accept because maxConnections were open.', this.#registry);

  constructor(options: BrokerMetricsOptions = {}) {
    this.#secretLabels = options.secretLabels ?? false;
    // Started with the first broker, not at the first scrape: CPU time and event-loop delay are counted from here.
    defaultMetricsRegistry();
    this.releases = this.#secretLabels
      ? new Counter('keygate_releases_total', 'Secrets released, by secret.', this.#registry, ['secret'])
      : new Counter('keygate_releases_total', 'Secrets released.', this.#registry);
  }

  /** The Content-Type of `render()`'s text (Prometheus text format 0.0.4). */
  get contentType(): string {
    return this.#registry.contentType;
  }

  /** Counts one released secret; its name becomes a label only when secretLabels is on. */
  released(secret: string): void {
    this.releases.inc(this.#secretLabels ? { secret } : {});
  }

  /** This broker's metrics, then the process's, in the Prometheus text format. */
  async render(): Promise<string> {
    return `${await this.#registry.metrics()}${await defaultMetricsRegistry().metrics()}`;
  }
}
