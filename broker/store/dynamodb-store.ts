import { ensureTable, TableMismatchError } from '../aws/dynamodb-table.js';
import { randomBytes } from 'node:crypto';
import { versionToReserve } from './reserved-version.js';
import { StoreProblems } from './problems.js';
import {
  DynamoDBClient,
  GetItemCommand,
  QueryCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
  type AttributeValue,
  type DynamoDBClientConfig,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { CodedError } from '../../lib/coded-error.js';
import { SchemaError, SECRET_NAME, parseBinding, parseRevocations } from '../policy/schema.js';
import { NO_REVOCATIONS, type Binding, type Revocations } from '../policy/types.js';
import { formatBaseline, parseBaseline, type Baseline } from '../policy/baseline.js';
import type { DynamoDbStoreSettings } from './open-store.js';
import type { BindingStore, StoreProblem, StoreSnapshot, StoreWrite, StoreWriter } from './store.js';

/**
 * The store on one DynamoDB table, shared by every broker replica and admin.
 *
 * Layout: every store item lives in one partition (`pk = "store"`), so one
 * consistent Query reads it all; the sort key names the item:
 *   sk = "version"            { v: N, t: S } bumped by every write, in the same transaction; t is a random
 *                                      token set by that write, so a restored or re-created table that
 *                                      reaches the same number with other content still reads as changed
 *   sk = "binding#<secret>"   { doc: S } the binding's JSON, validated on load like a binding file
 *   sk = "baseline#<name>"    { doc: S } a baseline with its approvals
 *   sk = "revocations"        { doc: S } the identity-wide revocation list
 *   sk = "retired#<secret>"   { v: N }   the last version of an unbound secret (versions never repeat)
 * Other partitions are left to other components (shared keys: `key#<purpose>`).
 *
 * Every update is one TransactWriteItems conditioned on the version read at
 * its start: a concurrent change makes it re-run on fresh state (bounded),
 * so no admin's update is lost.
 */

export const STORE_PARTITION = 'store';
/** The table's TTL attribute (epoch seconds), for short-lived items of other components (nonces). */
/** TTL attribute of the store table: the nonce and quarantine items' (`ttl`), so one table may hold them all. Store items never carry it. */
export const TTL_ATTRIBUTE = 'ttl';

const MAX_TRANSACTION_ITEMS = 100;
const MAX_TRANSACTION_BYTES = 4 * 1024 * 1024;
const MAX_ITEM_BYTES = 400 * 1024;
/** Runs of an update before a conflict is reported: each round at least one contender commits. */
const MAX_UPDATE_ATTEMPTS = 25;

export type DynamoDbStoreErrorCode = 'STORE_UNAVAILABLE' | 'STORE_CONFLICT' | 'STORE_TOO_LARGE';

/**
 * The store could not be read or written. A failed read loads nothing. A failed write is either refused
 * (STORE_CONFLICT, STORE_TOO_LARGE, a refused transaction: nothing was written) or of unknown outcome
 * (STORE_UNAVAILABLE on a write whose deadline passed: it may have been committed). Running the
 * command again is safe: revoke, unbind and approvals are idempotent; a bind or rotate may then bump
 * the version twice, which agents accept (versions only have to increase).
 */
export class DynamoDbStoreError extends CodedError<DynamoDbStoreErrorCode> {
  override readonly name = 'DynamoDbStoreError';
}

export interface DynamoDbStoreOptions {
  readonly onProblem?: (problem: StoreProblem) => void;
  /** Client settings beyond the config (tests: credentials). Region and endpoint come from the settings or the SDK's environment. */
  readonly client?: DynamoDBClientConfig;
  /** Time budget of one DynamoDB call, SDK retries (throttling, 5xx) included. Default 5000. */
  readonly requestTimeoutMs?: number;
}

/** The version item as read: its number and the token of the write that set it (absent on tables written before tokens). */
interface VersionMark {
  readonly version: number;
  readonly token: string | undefined;
}

const sameMark = (a: VersionMark, b: VersionMark): boolean => a.version === b.version && a.token === b.token;

interface Loaded extends VersionMark {
  /** The items as read (keys and attributes), to tell a changed state from a re-read of the same one. */
  readonly content: string;
  readonly snapshot: StoreSnapshot;
  /** Raw binding docs by name (valid or not), for unbinding a damaged one. */
  readonly bindingDocs: ReadonlyMap<string, string | undefined>;
  readonly retired: ReadonlyMap<string, AttributeValue | undefined>;
}

const EMPTY: StoreSnapshot = { bindings: new Map(), baselines: new Map(), revocations: NO_REVOCATIONS, invalidBindings: new Set(), revocationsProblem: undefined, generation: 0 };

function key(sk: string): Record<string, AttributeValue> {
  return { pk: { S: STORE_PARTITION }, sk: { S: sk } };
}

function clientConfig(settings: DynamoDbStoreSettings, extra: DynamoDBClientConfig = {}): DynamoDBClientConfig {
  return {
    ...(settings.region ? { region: settings.region } : {}),
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    maxAttempts: 3,
    ...extra,
  };
}

/**
 * What a failed write whose outcome is unknown says (its deadline passed, the connection dropped):
 * DynamoDB may have committed it all the same.
 */
const WRITE_OUTCOME_UNKNOWN =
  'the outcome is unknown: the change may have been committed (check with keygate list). Running the command again is safe: ' +
  'revoke, unbind and approvals are idempotent; a bind or rotate may then bump the version twice, which agents accept';

/** The item (sort key and attributes) one write puts, validated: shared by `update` and `checkUpdate`. */
function storeItem(write: StoreWrite): [string, Record<string, AttributeValue>] {
  switch (write.kind) {
    case 'binding': {
      const valid = parseBinding(write.binding);
      return [`binding#${valid.secret}`, { doc: { S: JSON.stringify(valid) } }];
    }
    case 'baseline': {
      const valid = parseBaseline(write.baseline);
      return [`baseline#${valid.name}`, { doc: { S: formatBaseline(valid) } }];
    }
    case 'revocations':
      return ['revocations', { doc: { S: JSON.stringify(parseRevocations(write.revocations)) } }];
    case 'reserved-version':
      return [`retired#${write.name}`, { v: { N: String(write.version) } }];
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

export class DynamoDbStore implements BindingStore {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #maxStalenessMs: number;
  readonly #timeoutMs: number;
  #loaded: Loaded = { version: -1, token: undefined, content: '', snapshot: EMPTY, bindingDocs: new Map(), retired: new Map() };
  readonly #problems: StoreProblems;
  #checking: Promise<StoreSnapshot> | undefined;
  /** When the read in flight (#checking) started. */
  #checkingStarted = -Infinity;
  /** The read that starts once the one in flight ends, for callers that arrived after it started. */
  #queued: Promise<StoreSnapshot> | undefined;
  #lastCheck = -Infinity;

  private constructor(settings: DynamoDbStoreSettings, options: DynamoDbStoreOptions) {
    this.#client = new DynamoDBClient(clientConfig(settings, options.client));
    this.#table = settings.table;
    this.#maxStalenessMs = settings.consistency?.maxStalenessMs ?? 1000;
    this.#timeoutMs = options.requestTimeoutMs ?? 5000;
    this.#problems = new StoreProblems(options.onProblem ?? (() => {}));
  }

  /** Opens the store on an existing table (`keygate store init` creates it) and loads it. */
  static async open(settings: DynamoDbStoreSettings, options: DynamoDbStoreOptions = {}): Promise<DynamoDbStore> {
    const store = new DynamoDbStore(settings, options);
    try {
      await store.rescan();
    } catch (err) {
      store.close();
      throw err;
    }
    return store;
  }

  /** Releases the client's connections. */
  close(): void {
    this.#client.destroy();
  }

  snapshot(): StoreSnapshot {
    return this.#loaded.snapshot;
  }

  problems(): readonly StoreProblem[] {
    return this.#problems.list();
  }

  /** The name an item has in problems and logs. */
  #label(kind: 'bindings' | 'baselines' | 'revocations', name?: string): string {
    return `dynamodb:${this.#table}/${kind}${name === undefined ? '' : `/${name}`}`;
  }

  async #send<T>(what: string, call: (signal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await call(AbortSignal.timeout(this.#timeoutMs));
    } catch (err) {
      if (err instanceof DynamoDbStoreError || err instanceof TransactionCanceledException) throw err;
      throw new DynamoDbStoreError('STORE_UNAVAILABLE', `DynamoDB table ${this.#table}: ${what} failed (${errorText(err)})`, { cause: err });
    }
  }

  async #readVersion(): Promise<VersionMark> {
    const out = await this.#send('reading the store version', (abortSignal) =>
      this.#client.send(new GetItemCommand({ TableName: this.#table, Key: key('version'), ConsistentRead: true }), { abortSignal }),
    );
    if (out.Item === undefined) return { version: 0, token: undefined }; // a new table: nothing written yet
    const n = Number(out.Item.v?.N);
    if (!Number.isSafeInteger(n) || n < 0) throw new DynamoDbStoreError('STORE_UNAVAILABLE', `DynamoDB table ${this.#table}: the store version item is damaged`);
    return { version: n, token: out.Item.t?.S };
  }

  /**
   * A snapshot no older than maxStalenessMs: its version read started at most that long before this call.
   * Concurrent callers share a read, but only one that started late enough: a read already in flight that
   * began earlier may have missed a change committed just before this call, so the caller waits for the
   * next read instead (which every caller arriving meanwhile shares). With maxStalenessMs 0 a request thus
   * always sees every change committed before it arrived, at the cost of at most one read in flight plus
   * one queued at any time.
   */
  refresh(): Promise<StoreSnapshot> {
    const freshAfter = performance.now() - this.#maxStalenessMs;
    if (this.#maxStalenessMs > 0 && this.#lastCheck >= freshAfter) return Promise.resolve(this.#loaded.snapshot);
    if (this.#checking && this.#checkingStarted >= freshAfter) return this.#checking;
    if (this.#checking) {
      const previous = this.#checking;
      this.#queued ??= previous
        .catch(() => undefined)
        .then(() => {
          this.#queued = undefined;
          return this.#startCheck();
        });
      return this.#queued;
    }
    return this.#startCheck();
  }

  #startCheck(): Promise<StoreSnapshot> {
    // Until the read starts (next turn of the event loop), callers arriving meanwhile may share it.
    this.#checkingStarted = Infinity;
    const check = (async () => {
      await new Promise<void>((r) => setImmediate(r));
      const started = performance.now();
      this.#checkingStarted = started;
      const mark = await this.#readVersion();
      if (!sameMark(mark, this.#loaded)) await this.#load(mark);
      this.#lastCheck = Math.max(this.#lastCheck, started);
      return this.#loaded.snapshot;
    })().finally(() => {
      if (this.#checking === check) this.#checking = undefined;
    });
    this.#checking = check;
    return check;
  }

  async rescan(): Promise<StoreSnapshot> {
    await this.#checking?.catch(() => undefined);
    const started = performance.now();
    await this.#load(await this.#readVersion());
    this.#lastCheck = started;
    return this.#loaded.snapshot;
  }

  /** Reads every item of the store; `hint` is the version just read. Repeats until no write landed meanwhile. */
  async #load(hint: VersionMark): Promise<void> {
    let before = hint;
    for (let attempt = 0; ; attempt++) {
      const items: Array<Record<string, AttributeValue>> = [];
      let start: Record<string, AttributeValue> | undefined;
      do {
        const page = await this.#send('reading the store', (abortSignal) =>
          this.#client.send(
            new QueryCommand({
              TableName: this.#table,
              KeyConditionExpression: 'pk = :pk',
              ExpressionAttributeValues: { ':pk': { S: STORE_PARTITION } },
              ConsistentRead: true,
              ...(start ? { ExclusiveStartKey: start } : {}),
            }),
            { abortSignal },
          ),
        );
        items.push(...(page.Items ?? []));
        start = page.LastEvaluatedKey;
      } while (start);
      // Every write bumps the version in its transaction: unchanged after the read, the pages form one state.
      const after = await this.#readVersion();
      if (sameMark(after, before)) {
        this.#apply(after, items);
        return;
      }
      if (attempt >= 5) throw new DynamoDbStoreError('STORE_UNAVAILABLE', `DynamoDB table ${this.#table}: the store kept changing while it was read`);
      before = after;
    }
  }

  #apply(mark: VersionMark, items: ReadonlyArray<Record<string, AttributeValue>>): void {
    const bindings = new Map<string, Binding>();
    const baselines = new Map<string, Baseline>();
    const invalidBindings = new Set<string>();
    const bindingDocs = new Map<string, string | undefined>();
    const retired = new Map<string, AttributeValue | undefined>();
    let revocations: Revocations = NO_REVOCATIONS;
    let revocationsProblem: StoreProblem | undefined;
    const seen = new Set<string>();
    const parseDoc = <T>(file: string, item: Record<string, AttributeValue>, parse: (json: unknown) => T): T | undefined => {
      seen.add(file);
      try {
        const doc = item.doc?.S;
        if (doc === undefined) throw new SchemaError(file, 'item has no string attribute "doc"');
        const value = parse(JSON.parse(doc) as unknown);
        this.#problems.clear(file);
        return value;
      } catch (err) {
        const message = err instanceof SchemaError ? err.message : err instanceof SyntaxError ? `invalid JSON: ${err.message}` : String(err);
        // Fail closed: what this item governs becomes unavailable; no earlier copy is kept.
        this.#problems.report(file, message);
        return undefined;
      }
    };
    for (const item of items) {
      const sk = item.sk?.S ?? '';
      const hash = sk.indexOf('#');
      const kind = hash < 0 ? sk : sk.slice(0, hash);
      const name = sk.slice(hash + 1);
      if (kind === 'binding') {
        bindingDocs.set(name, item.doc?.S);
        const value = parseDoc(this.#label('bindings', name), item, (json) => {
          if (!SECRET_NAME.test(name)) throw new SchemaError(name, 'item name is not a valid name');
          const binding = parseBinding(json, name);
          if (binding.secret !== name) throw new SchemaError(`${name}.secret`, `must equal the item name ("${name}")`);
          return binding;
        });
        if (value) bindings.set(name, value);
        else invalidBindings.add(name);
      } else if (kind === 'baseline') {
        // A baseline that fails validation is simply absent: rules that reference it do not count.
        const value = parseDoc(this.#label('baselines', name), item, (json) => {
          if (!SECRET_NAME.test(name)) throw new SchemaError(name, 'item name is not a valid name');
          const baseline = parseBaseline(json, name);
          if (baseline.name !== name) throw new SchemaError(`${name}.name`, `must equal the item name ("${name}")`);
          return baseline;
        });
        if (value) baselines.set(name, value);
      } else if (sk === 'revocations') {
        const file = this.#label('revocations');
        const value = parseDoc(file, item, (json) => parseRevocations(json, 'revocations'));
        if (value) revocations = value;
        else revocationsProblem ??= this.#problems.get(file);
      } else if (kind === 'retired') {
        retired.set(name, item.v);
      } else if (sk !== 'version') {
        // An item keygate does not write (a backup copy, a hand edit, a forgery) could be meant to change policy:
        // whom the store revokes is then unknown, so nothing is released until it is removed.
        const file = `dynamodb:${this.#table}/${sk}`;
        seen.add(file);
        revocationsProblem = this.#problems.report(file, 'not an item keygate writes in the store partition; remove it (and bump the version item)');
      }
    }
    this.#problems.retain((file) => seen.has(file));
    const previous = this.#loaded.snapshot;
    // Query returns items in key order, so the same state reads as the same text.
    const content = JSON.stringify(items.map((i) => [i.sk, i.doc, i.v]));
    const snapshot = content === this.#loaded.content ? previous : { bindings, baselines, revocations, invalidBindings, revocationsProblem, generation: previous.generation + 1 };
    this.#loaded = { ...mark, content, snapshot, bindingDocs, retired };
  }

  /** Highest version an unbound `secret` had (0: none). A damaged record refuses the write rather than reuse versions. */
  #retiredVersion(loaded: Loaded, secret: string): number {
    if (!loaded.retired.has(secret)) return 0;
    const n = Number(loaded.retired.get(secret)?.N);
    if (Number.isSafeInteger(n) && n >= 1) return n;
    throw new SchemaError(`dynamodb:${this.#table}/retired/${secret}`, 'retired-version record is damaged; fix or remove it (versions must never repeat)');
  }

  async update<T>(fn: (current: StoreSnapshot, tx: StoreWriter) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      await this.#checking?.catch(() => undefined);
      const loaded = await this.#fresh();
      const writes = new Map<string, TransactWriteItem>();
      const pendingRetired = new Map<string, number>();
      const put = (sk: string, attributes: Record<string, AttributeValue>): void => {
        writes.set(sk, { Put: { TableName: this.#table, Item: { ...key(sk), ...attributes } } });
      };
      const retiredVersion = (secret: string): number => Math.max(pendingRetired.get(secret) ?? 0, this.#retiredVersion(loaded, secret));
      const writer: StoreWriter = {
        putBinding: async (binding) => void put(...storeItem({ kind: 'binding', binding })),
        deleteBinding: async (secret) => {
          if (!SECRET_NAME.test(secret)) return false;
          const sk = `binding#${secret}`;
          const existed = loaded.bindingDocs.has(secret) && writes.get(sk)?.Delete === undefined;
          if (!existed) return false;
          const version = loaded.snapshot.bindings.get(secret)?.version ?? versionToReserve(loaded.bindingDocs.get(secret));
          // Reserved in the same transaction as the delete: both happen or neither.
          if (version > retiredVersion(secret)) {
            pendingRetired.set(secret, version);
            put(`retired#${secret}`, { v: { N: String(version) } });
          }
          writes.set(sk, { Delete: { TableName: this.#table, Key: key(sk) } });
          return true;
        },
        nextVersion: async (secret) => Math.max(loaded.snapshot.bindings.get(secret)?.version ?? 0, retiredVersion(secret)) + 1,
        putRevocations: async (revocations) => void put(...storeItem({ kind: 'revocations', revocations })),
        putBaseline: async (baseline) => void put(...storeItem({ kind: 'baseline', baseline })),
        reservedVersions: async () => {
          const reserved = new Map<string, number>();
          for (const name of new Set([...loaded.retired.keys(), ...pendingRetired.keys()])) reserved.set(name, retiredVersion(name));
          return reserved;
        },
        reserveVersion: async (secret, version) => {
          if (!SECRET_NAME.test(secret) || !Number.isSafeInteger(version) || version < 1) throw new SchemaError('reserved version', `invalid reservation ${secret}@${version}`);
          if (version <= retiredVersion(secret)) return;
          pendingRetired.set(secret, version);
          put(...storeItem({ kind: 'reserved-version', name: secret, version }));
        },
      };
      const result = await fn(loaded.snapshot, writer);
      if (writes.size === 0) return result;
      const items = [...writes.values(), this.#bump(loaded)];
      this.#checkSize(items);
      try {
        await this.#send('writing the store', (abortSignal) => this.#client.send(new TransactWriteItemsCommand({ TransactItems: items }), { abortSignal }));
      } catch (err) {
        if (!this.#isConflict(err)) {
          if (err instanceof DynamoDbStoreError) throw new DynamoDbStoreError(err.code, `${err.message}; ${WRITE_OUTCOME_UNKNOWN}`, { cause: err.cause });
          throw new DynamoDbStoreError('STORE_UNAVAILABLE', `DynamoDB table ${this.#table}: the write was refused (${errorText(err)}); nothing was written`, { cause: err });
        }
        if (attempt >= MAX_UPDATE_ATTEMPTS) {
          throw new DynamoDbStoreError('STORE_CONFLICT', `DynamoDB table ${this.#table}: the store kept changing under this update (${attempt} attempts); nothing was written, run it again`);
        }
        // Back off with jitter so contenders spread out; then re-run on fresh state.
        await new Promise((r) => setTimeout(r, Math.random() * Math.min(500, 10 * 2 ** attempt)));
        continue;
      }
      await this.rescan().catch(() => undefined); // the write stands; a failed reload shows at the next refresh
      return result;
    }
  }

  /** The state at one store version, read consistently now. */
  async #fresh(): Promise<Loaded> {
    const mark = await this.#readVersion();
    if (!sameMark(mark, this.#loaded)) await this.#load(mark);
    return this.#loaded;
  }

  /**
   * The version bump every write carries, conditioned on the version (number AND token) its changes were
   * computed from: after a restore that reached the same number with other content, the token differs
   * and the write re-runs on fresh state instead of overwriting what it never saw.
   */
  #bump(read: VersionMark): TransactWriteItem {
    const sameNumber = read.version === 0 ? '(attribute_not_exists(v) OR v = :read)' : 'v = :read';
    return {
      Update: {
        TableName: this.#table,
        Key: key('version'),
        UpdateExpression: 'SET v = :next, t = :token',
        ConditionExpression: read.token === undefined ? `${sameNumber} AND attribute_not_exists(t)` : `${sameNumber} AND t = :readToken`,
        ExpressionAttributeValues: {
          ':next': { N: String(read.version + 1) },
          ':read': { N: String(read.version) },
          ':token': { S: randomBytes(16).toString('base64url') },
          ...(read.token === undefined ? {} : { ':readToken': { S: read.token } }),
        },
      },
    };
  }

  #isConflict(err: unknown): boolean {
    if (!(err instanceof TransactionCanceledException)) return false;
    const reasons = err.CancellationReasons ?? [];
    // Only a changed version (or a transaction racing on the same items) is a conflict; anything else is a real refusal.
    return reasons.length === 0 ? /ConditionalCheckFailed|TransactionConflict/.test(err.message) : reasons.every((r) => r.Code === undefined || r.Code === 'None' || r.Code === 'ConditionalCheckFailed' || r.Code === 'TransactionConflict');
  }

  checkUpdate(writes: readonly StoreWrite[]): void {
    const items = writes.map((write): TransactWriteItem => {
      const [sk, attributes] = storeItem(write);
      return { Put: { TableName: this.#table, Item: { ...key(sk), ...attributes } } };
    });
    this.#checkSize([...items, this.#bump(this.#loaded)]);
  }

  #checkSize(items: readonly TransactWriteItem[]): void {
    if (items.length > MAX_TRANSACTION_ITEMS) {
      throw new DynamoDbStoreError('STORE_TOO_LARGE', `this change writes ${items.length - 1} store items at once; DynamoDB takes at most ${MAX_TRANSACTION_ITEMS - 1} (plus the version) in one transaction: split it`);
    }
    let total = 0;
    for (const item of items) {
      const size = Buffer.byteLength(JSON.stringify(item.Put?.Item ?? item.Delete?.Key ?? item.Update?.Key ?? {}));
      if (size > MAX_ITEM_BYTES) throw new DynamoDbStoreError('STORE_TOO_LARGE', `a store item would be ${size} bytes; DynamoDB items hold at most ${MAX_ITEM_BYTES}`);
      total += size;
    }
    if (total > MAX_TRANSACTION_BYTES) throw new DynamoDbStoreError('STORE_TOO_LARGE', `this change writes ${total} bytes at once; a DynamoDB transaction holds at most ${MAX_TRANSACTION_BYTES}: split it`);
  }
}

/**
 * Creates the store's table if missing (on-demand billing, key pk/sk), enables
 * TTL on `ttl` for other components' short-lived items (nonces, quarantine) and requests
 * point-in-time recovery. Idempotent: reports what it did or found.
 */
export async function initDynamoDbStoreTable(settings: DynamoDbStoreSettings, client: DynamoDBClientConfig = {}): Promise<string[]> {
  const ddb = new DynamoDBClient(clientConfig(settings, client));
  const table = settings.table;
  try {
    const done = await ensureTable(ddb, { table, sortKey: true, ttlAttribute: TTL_ATTRIBUTE, pointInTimeRecovery: true });
    return [
      done.created ? `created table ${table} (on-demand)` : `table ${table} exists`,
      done.ttl?.state === 'already' ? `TTL on ${done.ttl.attribute} already enabled` : `enabled TTL on ${TTL_ATTRIBUTE}`,
      // Not fatal: the store works without it; the operator is told.
      done.pitr?.requested ? 'point-in-time recovery requested' : `point-in-time recovery NOT enabled (${done.pitr && !done.pitr.requested ? done.pitr.error : 'unknown'})`,
    ];
  } catch (err) {
    if (err instanceof TableMismatchError) throw err;
    throw new DynamoDbStoreError('STORE_UNAVAILABLE', `cannot initialise DynamoDB table ${table}: ${errorText(err)}`, { cause: err });
  } finally {
    ddb.destroy();
  }
}
