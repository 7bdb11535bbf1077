import { ConditionalCheckFailedException, DynamoDBClient, GetItemCommand, PutItemCommand, UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { initNonceTable } from '../nonce/dynamodb-registry.js';
import type { QuarantineStore } from '../rate-limit.js';
import { QuarantineUnavailableError, type QuarantineLimits, type QuarantineSettings } from './store.js';

export type DynamoDbQuarantineSettings = Extract<QuarantineSettings, { kind: 'dynamodb' }>;

/** The partition key (`quarantine#<identityKey>`): the same table shape as the nonce table, so both may share one table. */
export const QUARANTINE_KEY_ATTRIBUTE = 'pk';
/** Epoch seconds after which the item says nothing any more (quarantine over, denials out of the window): DynamoDB may delete it. */
export const QUARANTINE_TTL_ATTRIBUTE = 'ttl';

/** The item of one identity. */
export function quarantineItemKey(identity: string): string {
  return `quarantine#${identity}`;
}

/** Optimistic-concurrency rounds one recordDenial may take before it gives up (fail closed) under heavy contention. */
const MAX_ROUNDS = 16;

interface State {
  /** The item's version (0: no item), the condition of the next write. */
  readonly version: number;
  /** Recent denial times (epoch ms), at most threshold - 1 of them. */
  readonly denials: readonly number[];
  /** End of the quarantine (epoch ms), if one was ever set. */
  readonly until: number | undefined;
}

const errorName = (err: unknown): string => (err as { name?: string }).name || 'Error';
const isConditionFailure = (err: unknown): boolean => err instanceof ConditionalCheckFailedException || errorName(err) === 'ConditionalCheckFailedException';

/**
 * A quarantine shared by every replica: one item per enclave identity in a
 * DynamoDB table, holding its recent denial times, its quarantine end and a
 * version.
 *
 * recordDenial is a read-modify-write under optimistic concurrency: a
 * consistent GetItem, the same sliding-window arithmetic as the in-memory
 * Quarantine, then a PutItem conditional on the version read (or on the item
 * not existing); a lost race re-reads and retries. So concurrent denials from
 * any number of replicas are all counted (none overwrites another), and the
 * window is exactly "threshold denials within windowMs", like one broker's.
 * (A single UpdateItem cannot do this: list_append cannot also drop the
 * denials that left the window, and per-window counters keyed by window start
 * undercount a burst that straddles a window boundary by up to threshold - 1.)
 * The list is bounded: only the newest threshold - 1 denials can count towards
 * the next quarantine, so no more are kept. Denials are the rare path, so the
 * extra read costs nothing that matters.
 *
 * isQuarantined is one consistent GetItem per request (no cache: a quarantine
 * set on one replica is seen by every replica's next request).
 *
 * Fail closed: anything but success (throttling once the SDK's retries are
 * spent, the deadline, network or permission errors, contention past
 * MAX_ROUNDS) throws QuarantineUnavailableError and the request is refused.
 */
export class DynamoDbQuarantine implements QuarantineStore {
  readonly #settings: DynamoDbQuarantineSettings;
  readonly #limits: QuarantineLimits;
  #client: DynamoDBClient | undefined;

  constructor(settings: DynamoDbQuarantineSettings, limits: QuarantineLimits) {
    this.#settings = settings;
    this.#limits = limits;
  }

  async isQuarantined(identity: string, now: number): Promise<boolean> {
    const signal = this.#deadline();
    const state = await this.#read(identity, signal);
    if (state.until === undefined) return false;
    const { quarantineMs } = this.#limits;
    // A wall clock stepped backwards (or a replica whose clock runs ahead) must not stretch the quarantine beyond
    // its length from now: the end is pulled in, and stored so the clamp holds as this clock moves on.
    if (state.until - now > quarantineMs) {
      const clamped = now + quarantineMs;
      await this.#call('UpdateItem', () =>
        this.#ddb().send(
          new UpdateItemCommand({
            TableName: this.#settings.table,
            Key: { [QUARANTINE_KEY_ATTRIBUTE]: { S: quarantineItemKey(identity) } },
            UpdateExpression: 'SET #until = :clamped, #v = :next',
            ConditionExpression: '#v = :v',
            ExpressionAttributeNames: { '#until': 'until', '#v': 'v' },
            ExpressionAttributeValues: { ':clamped': { N: String(clamped) }, ':v': { N: String(state.version) }, ':next': { N: String(state.version + 1) } },
          }),
          { abortSignal: signal },
        ),
      ).catch((err: unknown) => {
        // Changed meanwhile (another denial, another clamp): this answer stands, the next check reads it afresh.
        if (!(err instanceof QuarantineUnavailableError && err.storeError === 'ConditionalCheckFailedException')) throw err;
      });
      return true;
    }
    return state.until > now;
  }

  async recordDenial(identity: string, now: number): Promise<void> {
    const { threshold, windowMs, quarantineMs } = this.#limits;
    if (threshold <= 0) return;
    const signal = this.#deadline();
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const state = await this.#read(identity, signal);
      // Times from the future (this clock stepped back, another replica's ahead) count as now: no denial stays in
      // the window longer than windowMs from now.
      const recent = state.denials.map((t) => Math.min(t, now)).filter((t) => t > now - windowMs);
      recent.push(now);
      let until = state.until;
      let denials: number[];
      if (recent.length >= threshold) {
        until = now + quarantineMs;
        denials = [];
      } else {
        denials = recent.slice(-(threshold - 1));
      }
      const forgetAt = Math.max(until ?? 0, now + windowMs);
      const item: Record<string, AttributeValue> = {
        [QUARANTINE_KEY_ATTRIBUTE]: { S: quarantineItemKey(identity) },
        denials: { L: denials.map((t) => ({ N: String(t) })) },
        v: { N: String(state.version + 1) },
        [QUARANTINE_TTL_ATTRIBUTE]: { N: String(Math.ceil(forgetAt / 1000)) },
        ...(until === undefined ? {} : { until: { N: String(until) } }),
      };
      try {
        await this.#call('PutItem', () =>
          this.#ddb().send(
            new PutItemCommand({
              TableName: this.#settings.table,
              Item: item,
              ...(state.version === 0
                ? { ConditionExpression: 'attribute_not_exists(#pk)', ExpressionAttributeNames: { '#pk': QUARANTINE_KEY_ATTRIBUTE } }
                : { ConditionExpression: '#v = :v', ExpressionAttributeNames: { '#v': 'v' }, ExpressionAttributeValues: { ':v': { N: String(state.version) } } }),
            }),
            { abortSignal: signal },
          ),
        );
        return;
      } catch (err) {
        // Another replica wrote this identity since the read: read again and count on top of its write.
        if (err instanceof QuarantineUnavailableError && err.storeError === 'ConditionalCheckFailedException') continue;
        throw err;
      }
    }
    throw new QuarantineUnavailableError(`quarantine table ${this.#settings.table}: denial not recorded after ${MAX_ROUNDS} contended rounds`, { storeError: 'Contention' });
  }

  /** Readiness: one eventually consistent GetItem of a key no identity has (proves the table exists and may be read). */
  async check(): Promise<void> {
    const signal = this.#deadline();
    await this.#call('GetItem', () => this.#ddb().send(new GetItemCommand({ TableName: this.#settings.table, Key: { [QUARANTINE_KEY_ATTRIBUTE]: { S: 'readiness#probe' } } }), { abortSignal: signal }));
  }

  close(): void {
    this.#client?.destroy();
    this.#client = undefined;
  }

  /** One deadline for a whole check or recorded denial, SDK and contention retries included: a release must not hang on the table. */
  #deadline(): AbortSignal {
    return AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 5_000);
  }

  #ddb(): DynamoDBClient {
    const s = this.#settings;
    return (this.#client ??= new DynamoDBClient({
      ...(s.region ? { region: s.region } : {}),
      ...(s.endpoint ? { endpoint: s.endpoint } : {}),
      ...(s.credentials ? { credentials: s.credentials } : {}),
      maxAttempts: s.maxAttempts ?? 3,
    }));
  }

  async #read(identity: string, signal: AbortSignal): Promise<State> {
    const out = await this.#call('GetItem', () =>
      this.#ddb().send(
        new GetItemCommand({ TableName: this.#settings.table, Key: { [QUARANTINE_KEY_ATTRIBUTE]: { S: quarantineItemKey(identity) } }, ConsistentRead: true }),
        { abortSignal: signal },
      ),
    );
    const item = out.Item;
    if (!item) return { version: 0, denials: [], until: undefined };
    // A present attribute of another type (S, NS, SS, ...) is NaN, never "absent": it fails closed below.
    const num = (v: AttributeValue | undefined): number | undefined => (v === undefined ? undefined : v.N === undefined ? NaN : Number(v.N));
    const version = num(item.v);
    const until = num(item.until);
    const denials = item.denials === undefined ? [] : item.denials.L === undefined ? [NaN] : item.denials.L.map(num);
    // An item this code did not write is not trusted to mean "not quarantined": fail closed.
    if (version === undefined || !Number.isSafeInteger(version) || version < 1 || (until !== undefined && !Number.isFinite(until)) || denials.some((t) => t === undefined || !Number.isFinite(t))) {
      throw new QuarantineUnavailableError(`quarantine table ${this.#settings.table}: malformed item ${quarantineItemKey(identity)}`, { storeError: 'MalformedItem' });
    }
    return { version, until, denials: denials as number[] };
  }

  /** Runs one SDK call; every failure becomes a coded QuarantineUnavailableError carrying the SDK's error name. */
  async #call<T>(op: string, send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      const name = isConditionFailure(err) ? 'ConditionalCheckFailedException' : errorName(err);
      throw new QuarantineUnavailableError(`quarantine table ${this.#settings.table}: ${op} failed (${name})`, { cause: err, storeError: name });
    }
  }
}

/**
 * Creates the quarantine table if it is missing (on-demand billing, key `pk`, TTL on `ttl`), idempotently.
 * The shape is the nonce table's (items are prefixed by kind), so the same table may serve both.
 */
export async function initQuarantineTable(settings: DynamoDbQuarantineSettings, options: { readonly maxWaitSeconds?: number } = {}): Promise<{ table: string; created: boolean; ttlEnabled: boolean }> {
  return initNonceTable({ ...settings, kind: 'dynamodb' }, options);
}
