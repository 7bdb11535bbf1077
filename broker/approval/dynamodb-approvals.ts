import { ConditionalCheckFailedException, DeleteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, QueryCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import type { DynamoDbStoreSettings } from '../store/open-store.js';
import type { ApprovalStore } from './approval-store.js';
import { APPROVAL_ID, ApprovalError, parseApprovalRequest, type ApprovalRequest } from './request.js';

/** The partition of the store table approval requests live in (never the store's own `pk = "store"`). */
export const APPROVAL_PARTITION = 'approval';
/** Finished or expired requests are kept this long past their expiry, then DynamoDB's TTL may delete them. */
const KEEP_AFTER_EXPIRY_MS = 30 * 86_400_000;

const errorName = (err: unknown): string => (err as { name?: string }).name || 'Error';
const conditionFailed = (err: unknown): boolean => err instanceof ConditionalCheckFailedException || errorName(err) === 'ConditionalCheckFailedException';

/**
 * Approval requests of a DynamoDB store, in the store's own table: `pk = "approval"`, `sk = "request#<id>"`,
 * `doc` the request's JSON, `rev` its revision (the condition of every replace), `ttl` housekeeping. One
 * consistent Query lists them; writes are conditional PutItems, so replicas and CLIs never overwrite each
 * other's grants and a single-use release is taken by one request only.
 */
export class DynamoDbApprovalStore implements ApprovalStore {
  readonly #settings: DynamoDbStoreSettings;
  readonly #timeoutMs: number;
  #client: DynamoDBClient | undefined;

  constructor(settings: DynamoDbStoreSettings, timeoutMs = 5_000) {
    this.#settings = settings;
    this.#timeoutMs = timeoutMs;
  }

  #ddb(): DynamoDBClient {
    const s = this.#settings;
    return (this.#client ??= new DynamoDBClient({ ...(s.region ? { region: s.region } : {}), ...(s.endpoint ? { endpoint: s.endpoint } : {}), maxAttempts: 3 }));
  }

  async #call<T>(op: string, send: (signal: AbortSignal) => Promise<T>): Promise<T> {
    try {
      return await send(AbortSignal.timeout(this.#timeoutMs));
    } catch (err) {
      if (conditionFailed(err)) throw err;
      throw new ApprovalError('APPROVAL_STORE_UNAVAILABLE', `approval requests in table ${this.#settings.table}: ${op} failed (${errorName(err)})`, { cause: err });
    }
  }

  #key(id: string): Record<string, AttributeValue> {
    if (!APPROVAL_ID.test(id)) throw new ApprovalError('APPROVAL_NOT_FOUND', `"${id.slice(0, 80)}" is not an approval request id (apr_ and 32 hex digits)`);
    return { pk: { S: APPROVAL_PARTITION }, sk: { S: `request#${id}` } };
  }

  #parse(item: Record<string, AttributeValue>): ApprovalRequest {
    let json: unknown;
    try {
      json = JSON.parse(item.doc?.S ?? '');
    } catch {
      throw new ApprovalError('APPROVAL_STORE_INVALID', `approval item ${item.sk?.S ?? '?'} is not JSON`);
    }
    const request = parseApprovalRequest(json);
    if (item.rev?.N !== String(request.rev) || item.sk?.S !== `request#${request.id}`) throw new ApprovalError('APPROVAL_STORE_INVALID', `approval item ${item.sk?.S ?? '?'} does not match its document`);
    return request;
  }

  #item(request: ApprovalRequest): Record<string, AttributeValue> {
    return {
      ...this.#key(request.id),
      doc: { S: JSON.stringify(request) },
      rev: { N: String(request.rev) },
      ttl: { N: String(Math.ceil((Date.parse(request.expiresAt) + KEEP_AFTER_EXPIRY_MS) / 1000)) },
    };
  }

  async list(): Promise<ApprovalRequest[]> {
    const out: ApprovalRequest[] = [];
    let start: Record<string, AttributeValue> | undefined;
    do {
      const page = await this.#call('Query', (abortSignal) =>
        this.#ddb().send(
          new QueryCommand({
            TableName: this.#settings.table,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': { S: APPROVAL_PARTITION } },
            ConsistentRead: true,
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
          { abortSignal },
        ),
      );
      for (const item of page.Items ?? []) {
        try {
          out.push(this.#parse(item));
        } catch {
          // An item that fails validation authorises nothing; `get` reports it.
        }
      }
      start = page.LastEvaluatedKey;
    } while (start);
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async get(id: string): Promise<ApprovalRequest | undefined> {
    const Key = this.#key(id);
    const out = await this.#call('GetItem', (abortSignal) => this.#ddb().send(new GetItemCommand({ TableName: this.#settings.table, Key, ConsistentRead: true }), { abortSignal }));
    return out.Item ? this.#parse(out.Item) : undefined;
  }

  async create(request: ApprovalRequest): Promise<boolean> {
    try {
      await this.#call('PutItem', (abortSignal) =>
        this.#ddb().send(new PutItemCommand({ TableName: this.#settings.table, Item: this.#item(request), ConditionExpression: 'attribute_not_exists(pk)' }), { abortSignal }),
      );
      return true;
    } catch (err) {
      if (conditionFailed(err)) return false;
      throw err;
    }
  }

  async replace(next: ApprovalRequest): Promise<boolean> {
    try {
      await this.#call('PutItem', (abortSignal) =>
        this.#ddb().send(
          new PutItemCommand({
            TableName: this.#settings.table,
            Item: this.#item(next),
            ConditionExpression: '#rev = :prev',
            ExpressionAttributeNames: { '#rev': 'rev' },
            ExpressionAttributeValues: { ':prev': { N: String(next.rev - 1) } },
          }),
          { abortSignal },
        ),
      );
      return true;
    } catch (err) {
      if (conditionFailed(err)) return false;
      throw err;
    }
  }

  async remove(id: string): Promise<void> {
    const Key = this.#key(id);
    await this.#call('DeleteItem', (abortSignal) => this.#ddb().send(new DeleteItemCommand({ TableName: this.#settings.table, Key }), { abortSignal }));
  }

  async check(): Promise<void> {
    await this.#call('GetItem', (abortSignal) => this.#ddb().send(new GetItemCommand({ TableName: this.#settings.table, Key: { pk: { S: APPROVAL_PARTITION }, sk: { S: 'readiness#probe' } } }), { abortSignal }));
  }

  close(): void {
    this.#client?.destroy();
    this.#client = undefined;
  }
}
