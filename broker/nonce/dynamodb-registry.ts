import { ensureTable } from '../aws/dynamodb-table.js';
import {
  ConditionalCheckFailedException,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import { dynamoDbClient } from '../aws/dynamodb-client.js';
import { NonceRegistryUnavailableError, type NonceRegistry, type NonceRegistrySettings, type NonceUse } from './registry.js';

export type DynamoDbNonceSettings = Extract<NonceRegistrySettings, { kind: 'dynamodb' }>;

/** The table's partition key: `nonce#<hex>` (prefixed so the items can share a table with other kinds later). */
export const NONCE_KEY_ATTRIBUTE = 'pk';
/** The TTL attribute: epoch seconds after which DynamoDB may delete the item (see NONCE_TTL_MARGIN_MS). */
export const NONCE_TTL_ATTRIBUTE = 'ttl';

/**
 * How long past `rememberUntil` (the nonce's lifetime plus the tolerated skew, by the issuing replica's
 * clock) the item is kept. The TTL is only housekeeping, but deleting the item while some replica still
 * accepts the nonce would make a replay "fresh": a replica whose clock runs behind accepts it longer in
 * real time. An hour covers any clock a replica could be serving with; the cost is an hour of small items.
 */
export const NONCE_TTL_MARGIN_MS = 60 * 60 * 1000;

/** The item that marks a nonce used. */
export function nonceItemKey(id: string): string {
  return `nonce#${id}`;
}

/**
 * Nonces single use across every replica: one conditional PutItem
 * (attribute_not_exists) per nonce, so DynamoDB decides which of several
 * concurrent consumers (on any replica) wins. The item carries a TTL so the
 * table does not grow: DynamoDB deletes it some time after the nonce can no
 * longer be accepted anywhere (deletion is lazy, which is harmless: an
 * expired nonce is refused by ChallengeService before the table is asked).
 *
 * Fail closed: anything but success or a failed condition (throttling once
 * the SDK's retries are spent, timeouts, network or permission errors) throws
 * NonceRegistryUnavailableError and the request is refused.
 */
export class DynamoDbNonceRegistry implements NonceRegistry {
  readonly #settings: DynamoDbNonceSettings;
  #client: DynamoDBClient | undefined;

  constructor(settings: DynamoDbNonceSettings) {
    this.#settings = settings;
  }

  // `now` is unused: the table, not this replica's clock, decides first use (and TTL deletion).
  async consume(id: string, rememberUntil: number, _now?: number): Promise<NonceUse> {
    this.#client ??= dynamoDbClient(this.#settings);
    try {
      await this.#client.send(
        new PutItemCommand({
          TableName: this.#settings.table,
          Item: {
            [NONCE_KEY_ATTRIBUTE]: { S: nonceItemKey(id) },
            [NONCE_TTL_ATTRIBUTE]: { N: String(Math.ceil((rememberUntil + NONCE_TTL_MARGIN_MS) / 1000)) },
          },
          ConditionExpression: 'attribute_not_exists(#pk)',
          ExpressionAttributeNames: { '#pk': NONCE_KEY_ATTRIBUTE },
        }),
        // A release must not hang on the table: one deadline for the call and its retries.
        { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 5_000) },
      );
      return 'fresh';
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as { name?: string }).name === 'ConditionalCheckFailedException') return 'used';
      const name = (err as { name?: string }).name || 'Error';
      throw new NonceRegistryUnavailableError(`nonce table ${this.#settings.table}: PutItem failed (${name})`, { cause: err, registryError: name });
    }
  }

  /**
   * Readiness: one eventually consistent GetItem of a key no nonce has (the cheapest read that proves the
   * table exists and this broker may use it). Needs dynamodb:GetItem on the table besides PutItem.
   */
  async check(): Promise<void> {
    this.#client ??= dynamoDbClient(this.#settings);
    try {
      await this.#client.send(
        new GetItemCommand({ TableName: this.#settings.table, Key: { [NONCE_KEY_ATTRIBUTE]: { S: 'readiness#probe' } } }),
        { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 5_000) },
      );
    } catch (err) {
      const name = (err as { name?: string }).name || 'Error';
      throw new NonceRegistryUnavailableError(`nonce table ${this.#settings.table}: GetItem failed (${name})`, { cause: err, registryError: name });
    }
  }

  close(): void {
    this.#client?.destroy();
    this.#client = undefined;
  }
}

/** What initNonceTable did. */
export interface NonceTableInit {
  readonly table: string;
  readonly created: boolean;
  readonly ttlEnabled: boolean;
}

/**
 * Creates the nonce table if it is missing (on-demand billing, key `pk`),
 * waits until it is active, and turns on TTL on `ttl` if it is not on yet.
 * Idempotent: safe to run from several machines and again later.
 */
export async function initNonceTable(settings: DynamoDbNonceSettings, options: { readonly maxWaitSeconds?: number } = {}): Promise<NonceTableInit> {
  const ddb = dynamoDbClient(settings);
  try {
    const done = await ensureTable(ddb, { table: settings.table, sortKey: false, ttlAttribute: NONCE_TTL_ATTRIBUTE, ...(options.maxWaitSeconds !== undefined ? { maxWaitSeconds: options.maxWaitSeconds } : {}) });
    // A table has one TTL attribute: on for another one, ours is not (the report says so).
    return { table: settings.table, created: done.created, ttlEnabled: done.ttl?.attribute === NONCE_TTL_ATTRIBUTE };
  } finally {
    ddb.destroy();
  }
}
