import { FileStore } from './file-store.js';
import type { BindingStore, StoreProblem } from './store.js';

/** What choosing and opening a store needs from the broker config. */
export interface StoreSettings {
  /** The store's location: a directory of JSON files (the only backend today). */
  readonly store: string;
}

export interface OpenStoreOptions {
  /** Called once per file that fails validation (and again when its problem changes). */
  readonly onProblem?: (problem: StoreProblem) => void;
}

/**
 * The one place that chooses the store implementation from config. Only the
 * file store exists today; a shared backend (DynamoDB) is added here, and
 * everything else keeps depending on `BindingStore` alone.
 */
export async function openStore(config: StoreSettings, options: OpenStoreOptions = {}): Promise<BindingStore> {
  return FileStore.open(config.store, options.onProblem ? { onProblem: options.onProblem } : {});
}
