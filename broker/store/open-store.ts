import { FileStore } from './file-store.js';
import type { BindingStore, StoreProblem } from './store.js';

/** The shared DynamoDB backend (several brokers, several admins on several machines). */
export interface DynamoDbStoreSettings {
  readonly kind: 'dynamodb';
  /** Table holding the store's items (one partition; see dynamodb-store.ts for the layout). */
  readonly table: string;
  /** Overrides AWS_REGION / the SDK's region chain. */
  readonly region?: string;
  /** Overrides AWS_ENDPOINT_URL (a VPC endpoint, a local DynamoDB, moto). */
  readonly endpoint?: string;
  readonly consistency?: {
    /**
     * A change committed through any replica is seen by this one at most this long after
     * (plus one read). 0: one consistent read per request, shared by concurrent requests. Default 1000.
     */
    readonly maxStalenessMs?: number;
  };
}

/** A directory (the file store, one broker) or a shared backend. */
export type StoreLocation = string | DynamoDbStoreSettings;

/** What choosing and opening a store needs from the broker config. */
export interface StoreSettings {
  /** A directory of JSON files (the file store), or the settings of a shared backend. */
  readonly store: StoreLocation;
}

export interface OpenStoreOptions {
  /** Called once per file that fails validation (and again when its problem changes). */
  readonly onProblem?: (problem: StoreProblem) => void;
}

/**
 * How problems name the store's items: a file store's directory, or `dynamodb:<table>`
 * (its items are then named `dynamodb:<table>/bindings/<name>`, so a path relative to it reads the same).
 */
export function storeLabel(store: StoreLocation): string {
  return typeof store === 'string' ? store : `dynamodb:${store.table}`;
}

/**
 * The one place that chooses the store implementation from config. The
 * DynamoDB backend is loaded on demand: commands and brokers on a file store
 * never load the AWS SDK.
 */
export async function openStore(config: StoreSettings, options: OpenStoreOptions = {}): Promise<BindingStore> {
  const onProblem = options.onProblem ? { onProblem: options.onProblem } : {};
  if (typeof config.store === 'string') return FileStore.open(config.store, onProblem);
  const { DynamoDbStore } = await import('./dynamodb-store.js');
  return DynamoDbStore.open(config.store, onProblem);
}

/**
 * Creates what the configured store needs and reports each step (`keygate store init`), idempotently.
 * A list, so other shared components (the nonce registry, the audit chains) add their own initialiser.
 */
export type StoreInitialiser = (config: StoreSettings) => Promise<readonly string[]>;

export const STORE_INITIALISERS: StoreInitialiser[] = [
  async (config) => {
    if (typeof config.store === 'string') {
      await FileStore.open(config.store);
      return [`file store ready in ${config.store}`];
    }
    const { initDynamoDbStoreTable } = await import('./dynamodb-store.js');
    return initDynamoDbStoreTable(config.store);
  },
];

export async function initStore(config: StoreSettings, initialisers: readonly StoreInitialiser[] = STORE_INITIALISERS): Promise<string[]> {
  const report: string[] = [];
  for (const init of initialisers) report.push(...(await init(config)));
  return report;
}
