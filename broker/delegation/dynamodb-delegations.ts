import { ConditionalCheckFailedException, DynamoDBClient, GetItemCommand, PutItemCommand, QueryCommand, UpdateItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { dynamoDbClient } from '../aws/dynamodb-client.js';
import { DelegationRegistryUnavailableError, parseDelegationRecord, useOutcome, type DelegationRecord, type DelegationRegistry, type DynamoDbDelegationSettings, type UseOutcome } from './registry.js';

/**
 * Delegations on the store's DynamoDB table, in their own partition (`pk = "delegations"`, `sk =
 * "delegation#<id>"`): the store loads and validates only `pk = "store"`, so these never touch it.
 *   doc      S     the record's fixed fields (JSON)
 *   uses     N     uses taken
 *   left     N     uses left: conditions cannot add, so `left >= :n` is the bound
 *   revoked  BOOL
 *   exp      N     seconds since the epoch
 *   ttl      N     housekeeping: a day past exp (a missing record is refused, so deletion is harmless)
 * Taking uses is one conditional UpdateItem, so concurrent replicas never exceed maxUses; reads are
 * consistent, so a revocation takes effect on the next request of every replica.
 */
export const DELEGATION_PARTITION = 'delegations';
const TTL_MARGIN_SECONDS = 86_400;

const isConditionFailed = (err: unknown): boolean => err instanceof ConditionalCheckFailedException || (err as { name?: string }).name === 'ConditionalCheckFailedException';

export class DynamoDbDelegationRegistry implements DelegationRegistry {
  readonly #settings: DynamoDbDelegationSettings;
  #client: DynamoDBClient | undefined;

  constructor(settings: DynamoDbDelegationSettings) {
    this.#settings = settings;
  }

  get #ddb(): DynamoDBClient {
    this.#client ??= dynamoDbClient(this.#settings);
    return this.#client;
  }

  #key(id: string): Record<string, AttributeValue> {
    return { pk: { S: DELEGATION_PARTITION }, sk: { S: `delegation#${id}` } };
  }

  /** Sends one command under the deadline; any failure but a failed condition is "unavailable" (fail closed). */
  async #send<T>(what: string, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await run(AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 5_000));
    } catch (err) {
      if (isConditionFailed(err)) throw err;
      throw new DelegationRegistryUnavailableError(`delegations on table ${this.#settings.table}: ${what} failed (${(err as { name?: string }).name ?? 'Error'})`, { cause: err });
    }
  }

  #parse(item: Record<string, AttributeValue> | undefined): DelegationRecord | undefined {
    if (!item) return undefined;
    let fixed: unknown;
    try {
      fixed = JSON.parse(item.doc?.S ?? '');
    } catch {
      fixed = undefined;
    }
    const record = parseDelegationRecord({ ...(fixed as object), uses: Number(item.uses?.N), revoked: item.revoked?.BOOL });
    if (!record) throw new DelegationRegistryUnavailableError(`a delegation item on table ${this.#settings.table} fails validation`);
    return record;
  }

  async create(record: DelegationRecord): Promise<void> {
    const { uses: _uses, revoked: _revoked, ...fixed } = record;
    await this.#send('PutItem', (abortSignal) =>
      this.#ddb.send(
        new PutItemCommand({
          TableName: this.#settings.table,
          Item: {
            ...this.#key(record.id),
            doc: { S: JSON.stringify(fixed) },
            uses: { N: String(record.uses) },
            left: { N: String(record.maxUses - record.uses) },
            revoked: { BOOL: record.revoked },
            exp: { N: String(record.exp) },
            ttl: { N: String(record.exp + TTL_MARGIN_SECONDS) },
          },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
        { abortSignal },
      ),
    ).catch((err: unknown) => {
      if (isConditionFailed(err)) throw new DelegationRegistryUnavailableError(`delegation ${record.id} exists already`);
      throw err;
    });
  }

  async use(id: string, count: number, nowSeconds: number): Promise<UseOutcome> {
    try {
      await this.#send('UpdateItem', (abortSignal) =>
        this.#ddb.send(
          new UpdateItemCommand({
            TableName: this.#settings.table,
            Key: this.#key(id),
            UpdateExpression: 'SET uses = uses + :n, #left = #left - :n',
            ConditionExpression: 'attribute_exists(pk) AND revoked = :no AND exp > :now AND #left >= :n',
            ExpressionAttributeNames: { '#left': 'left' },
            ExpressionAttributeValues: { ':n': { N: String(count) }, ':no': { BOOL: false }, ':now': { N: String(nowSeconds) } },
          }),
          { abortSignal },
        ),
      );
      return 'ok';
    } catch (err) {
      if (!isConditionFailed(err)) throw err;
    }
    // Refused: say why from a consistent read (a use that raced in meanwhile can only make it "exhausted").
    const record = (await this.get([id])).get(id);
    const outcome = useOutcome(record, count, nowSeconds);
    return outcome === 'ok' ? 'exhausted' : outcome;
  }

  async get(ids: readonly string[]): Promise<ReadonlyMap<string, DelegationRecord>> {
    const items = await Promise.all(
      ids.map((id) => this.#send('GetItem', (abortSignal) => this.#ddb.send(new GetItemCommand({ TableName: this.#settings.table, Key: this.#key(id), ConsistentRead: true }), { abortSignal }))),
    );
    const out = new Map<string, DelegationRecord>();
    items.forEach((res, i) => {
      const record = this.#parse(res.Item);
      if (record && record.id === ids[i]) out.set(record.id, record);
    });
    return out;
  }

  async list(): Promise<{ records: DelegationRecord[]; invalid: string[] }> {
    const records: DelegationRecord[] = [];
    const invalid: string[] = [];
    let start: Record<string, AttributeValue> | undefined;
    do {
      const page = await this.#send('Query', (abortSignal) =>
        this.#ddb.send(
          new QueryCommand({
            TableName: this.#settings.table,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': { S: DELEGATION_PARTITION } },
            ConsistentRead: true,
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
          { abortSignal },
        ),
      );
      for (const item of page.Items ?? []) {
        const record = (() => {
          try {
            return this.#parse(item);
          } catch {
            return undefined;
          }
        })();
        if (record && item.sk?.S === `delegation#${record.id}`) records.push(record);
        else invalid.push((item.sk?.S ?? '?').replace(/^delegation#/, ''));
      }
      start = page.LastEvaluatedKey;
    } while (start);
    return { records, invalid };
  }

  async revoke(id: string): Promise<boolean> {
    try {
      await this.#send('UpdateItem', (abortSignal) =>
        this.#ddb.send(
          new UpdateItemCommand({ TableName: this.#settings.table, Key: this.#key(id), UpdateExpression: 'SET revoked = :yes', ConditionExpression: 'attribute_exists(pk)', ExpressionAttributeValues: { ':yes': { BOOL: true } } }),
          { abortSignal },
        ),
      );
      return true;
    } catch (err) {
      if (isConditionFailed(err)) return false;
      throw err;
    }
  }

  close(): void {
    this.#client?.destroy();
    this.#client = undefined;
  }
}
