import type { Binding, Revocations } from '../policy/types.js';
import type { Baseline } from '../policy/baseline.js';

/**
 * The store interface the broker, the admin operations and the CLI depend on.
 * Implementations live beside it (file-store.ts today; a shared backend such
 * as DynamoDB later) and are chosen from config in one place, open-store.ts.
 */

/** An immutable view of the store at one moment. */
export interface StoreSnapshot {
  readonly bindings: ReadonlyMap<string, Binding>;
  /** Recorded builds that bindings may reference (approvals included). */
  readonly baselines: ReadonlyMap<string, Baseline>;
  readonly revocations: Revocations;
  /**
   * Secret names whose binding file fails validation. Such a name is denied:
   * an older copy is not trusted either, since the change the admin meant did not take effect.
   */
  readonly invalidBindings: ReadonlySet<string>;
  /** Set while revocations.json fails validation: whom it revokes is unknown, so nothing may be released. */
  readonly revocationsProblem: StoreProblem | undefined;
  /** Increases whenever the content changes. */
  readonly generation: number;
}

/**
 * A file that could not be loaded. What it governs is unavailable until it is
 * fixed: a binding's name is denied, a baseline counts for nothing, a broken
 * revocation list stops every release.
 */
export interface StoreProblem {
  readonly file: string;
  readonly message: string;
}

/** The narrow interface the broker and CLI use; other backends (S3, DynamoDB) can implement it. */
export interface BindingStore {
  /** The state as last loaded. */
  snapshot(): StoreSnapshot;
  /** Reloads if anything changed since the last load (cheap when nothing did). */
  refresh(): Promise<StoreSnapshot>;
  /** Reloads everything now, regardless of the cheap change check. */
  rescan(): Promise<StoreSnapshot>;
  /** Runs a read-modify-write under the store lock, starting from fresh state. */
  update<T>(fn: (current: StoreSnapshot, tx: StoreWriter) => Promise<T>): Promise<T>;
  /** Files currently failing validation. */
  problems(): readonly StoreProblem[];
  /** Releases what the store holds (a backend's client and its connections); the store is not used after. */
  close(): void;
  /**
   * Checks, without writing, that ONE `update` making exactly these writes fits the backend's limits
   * (DynamoDB: item and transaction size; file store: the per-file cap). Throws the error that update
   * would throw (code STORE_TOO_LARGE). Lets a caller planning many writes refuse before the first one.
   */
  checkUpdate(writes: readonly StoreWrite[]): void;
}

/** One write of an update, as `checkUpdate` judges it (the same content the StoreWriter methods take). */
export type StoreWrite =
  | { readonly kind: 'binding'; readonly binding: Binding }
  | { readonly kind: 'baseline'; readonly baseline: Baseline }
  | { readonly kind: 'revocations'; readonly revocations: Revocations }
  | { readonly kind: 'reserved-version'; readonly name: string; readonly version: number };

/** Writes allowed inside `update`. */
export interface StoreWriter {
  putBinding(binding: Binding): Promise<void>;
  /** Removes a binding; its version stays reserved (see `nextVersion`). */
  deleteBinding(secret: string): Promise<boolean>;
  /**
   * The version a new binding of `secret` must carry: one above any version
   * it ever had, even if it was unbound since. Agents refuse a version lower
   * than one they accepted, so versions must never repeat.
   */
  nextVersion(secret: string): Promise<number>;
  putRevocations(revocations: Revocations): Promise<void>;
  putBaseline(baseline: Baseline): Promise<void>;
  /**
   * The versions reserved for names that are no longer bound (by name): what `nextVersion` stays above.
   * Copying a store carries them over, so a name unbound in one store never gets a version it had.
   */
  reservedVersions(): Promise<ReadonlyMap<string, number>>;
  /** Raises the version reserved for `secret` to `version` (never lowers it): `nextVersion` is then above it. */
  reserveVersion(secret: string, version: number): Promise<void>;
}
