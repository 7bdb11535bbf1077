import { ConditionalCheckFailedException, DynamoDBClient, GetItemCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { dynamoDbClient } from '../aws/dynamodb-client.js';
import { BudgetUnavailableError, type BudgetCounter, type BudgetSettings } from './budget.js';

export type DynamoDbBudgetSettings = Extract<BudgetSettings, { kind: 'dynamodb' }>;

/**
 * The item of one key's window: `budget#...` in the table's `pk`, so it can share a pk-only table (the
 * nonce table) and never lands in a store table's `pk = "store"` partition.
 */
export function budgetItemKey(key: string, windowStart: number): string {
  return `budget#${key}#${windowStart}`;
}

/** Kept an hour past its window (housekeeping only: a past window is never asked again). */
const TTL_MARGIN_MS = 60 * 60 * 1000;

/**
 * Budgets shared by every replica: one UpdateItem per call, `ADD n 1` on the condition that the count is
 * below the limit, so DynamoDB decides which of several concurrent calls (on any replica) gets the last
 * unit. Anything but success or a failed condition refuses the call (BudgetUnavailableError).
 */
export class DynamoDbBudgetCounter implements BudgetCounter {
  readonly #settings: DynamoDbBudgetSettings;
  #client: DynamoDBClient | undefined;

  constructor(settings: DynamoDbBudgetSettings) {
    this.#settings = settings;
  }

  #ddb(): DynamoDBClient {
    this.#client ??= dynamoDbClient(this.#settings);
    return this.#client;
  }

  async take(key: string, windowStart: number, windowMs: number, limit: number): Promise<boolean> {
    try {
      await this.#ddb().send(
        new UpdateItemCommand({
          TableName: this.#settings.table,
          Key: { pk: { S: budgetItemKey(key, windowStart) } },
          UpdateExpression: 'ADD #n :one SET #ttl = if_not_exists(#ttl, :ttl)',
          ConditionExpression: 'attribute_not_exists(#n) OR #n < :limit',
          ExpressionAttributeNames: { '#n': 'n', '#ttl': 'ttl' },
          ExpressionAttributeValues: { ':one': { N: '1' }, ':limit': { N: String(limit) }, ':ttl': { N: String(Math.ceil((windowStart + windowMs + TTL_MARGIN_MS) / 1000)) } },
        }),
        { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 5_000) },
      );
      return true;
    } catch (err) {
      if (err instanceof ConditionalCheckFailedException || (err as { name?: string }).name === 'ConditionalCheckFailedException') return false;
      const name = (err as { name?: string }).name || 'Error';
      throw new BudgetUnavailableError(`budget table ${this.#settings.table}: UpdateItem failed (${name})`, { cause: err, storeError: name });
    }
  }

  async check(): Promise<void> {
    try {
      await this.#ddb().send(new GetItemCommand({ TableName: this.#settings.table, Key: { pk: { S: 'readiness#probe' } } }), {
        abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 5_000),
      });
    } catch (err) {
      const name = (err as { name?: string }).name || 'Error';
      throw new BudgetUnavailableError(`budget table ${this.#settings.table}: GetItem failed (${name})`, { cause: err, storeError: name });
    }
  }

  close(): void {
    this.#client?.destroy();
    this.#client = undefined;
  }
}
