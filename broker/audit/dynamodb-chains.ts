import {
  CreateTableCommand,
  DescribeTableCommand,
  DynamoDBClient,
  QueryCommand,
  ResourceInUseException,
  UpdateContinuousBackupsCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { CodedError } from '../../lib/coded-error.js';
import { CHAIN_ID, type AuditChainReader, type ChainSummary } from './chain.js';
import { AUDIT_PK, AUDIT_SK, CHAINS_PK, chainPartition, HEAD_ATTRIBUTES, LINE_ATTRIBUTE, seqSortKey } from './dynamodb-layout.js';
import type { AuditSettings } from './settings.js';

export type DynamoDbAuditSettings = Extract<AuditSettings, { kind: 'dynamodb' }>;

/** The audit table's client: region, endpoint and credentials from the settings, else the SDK's usual chain. */
export function auditClient(settings: DynamoDbAuditSettings): DynamoDBClient {
  return new DynamoDBClient({
    ...(settings.region ? { region: settings.region } : {}),
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    ...(settings.credentials ? { credentials: settings.credentials } : {}),
    maxAttempts: settings.maxAttempts ?? 3,
  });
}

/** The audit table could not be read, or holds an item this code did not write. */
export class AuditChainReadError extends CodedError<'AUDIT_CHAINS_UNREADABLE' | 'AUDIT_CHAIN_MALFORMED'> {
  override readonly name = 'AuditChainReadError';
}

const errorName = (err: unknown): string => (err as { name?: string }).name || 'Error';

/** A head item as the table holds it; throws AUDIT_CHAIN_MALFORMED for one this code did not write. */
export function parseHeadItem(table: string, item: Record<string, AttributeValue>): ChainSummary & { readonly kid: string; readonly owner: string; readonly started: string } {
  const id = item[AUDIT_SK]?.S;
  const seq = item[HEAD_ATTRIBUTES.seq]?.N === undefined ? NaN : Number(item[HEAD_ATTRIBUTES.seq]!.N);
  const prevHash = item[HEAD_ATTRIBUTES.prevHash]?.S;
  if (id === undefined || !CHAIN_ID.test(id) || !Number.isSafeInteger(seq) || seq < 0 || prevHash === undefined || prevHash.length !== 64 || !/^[0-9a-f]+$/.test(prevHash)) {
    throw new AuditChainReadError('AUDIT_CHAIN_MALFORMED', `audit table ${table}: malformed chain head item ${JSON.stringify(id ?? '?')}`);
  }
  return { id, head: { seq, prevHash }, kid: item[HEAD_ATTRIBUTES.kid]?.S ?? '', owner: item[HEAD_ATTRIBUTES.owner]?.S ?? '', started: item[HEAD_ATTRIBUTES.started]?.S ?? '' };
}

/**
 * Reads the chains of the audit table: every Query consistent (a verifier
 * must see what was acknowledged), paginated, each call under a deadline.
 */
export class DynamoDbChainReader implements AuditChainReader {
  readonly #settings: DynamoDbAuditSettings;
  readonly #ddb: DynamoDBClient;

  constructor(settings: DynamoDbAuditSettings, client?: DynamoDBClient) {
    this.#settings = settings;
    this.#ddb = client ?? auditClient(settings);
  }

  get table(): string {
    return this.#settings.table;
  }

  async listChains(): Promise<ChainSummary[]> {
    const chains: ChainSummary[] = [];
    for await (const item of this.#query(CHAINS_PK)) {
      const { id, head } = parseHeadItem(this.#settings.table, item);
      chains.push({ id, head });
    }
    return chains;
  }

  async *readLines(chainId: string, afterSeq = 0): AsyncIterable<string> {
    for await (const item of this.#query(chainPartition(chainId), seqSortKey(afterSeq))) {
      const line = item[LINE_ATTRIBUTE]?.S;
      if (line === undefined) throw new AuditChainReadError('AUDIT_CHAIN_MALFORMED', `audit table ${this.#settings.table}: record ${chainId}/${item[AUDIT_SK]?.S ?? '?'} has no line`);
      yield line;
    }
  }

  /** Items of partition `pk` in sort-key order (after `afterSk`, when given). */
  async *#query(pk: string, afterSk?: string): AsyncIterable<Record<string, AttributeValue>> {
    let start: Record<string, AttributeValue> | undefined;
    do {
      let out;
      try {
        out = await this.#ddb.send(
          new QueryCommand({
            TableName: this.#settings.table,
            KeyConditionExpression: afterSk === undefined ? '#pk = :pk' : '#pk = :pk AND #sk > :after',
            ExpressionAttributeNames: { '#pk': AUDIT_PK, ...(afterSk === undefined ? {} : { '#sk': AUDIT_SK }) },
            ExpressionAttributeValues: { ':pk': { S: pk }, ...(afterSk === undefined ? {} : { ':after': { S: afterSk } }) },
            ConsistentRead: true,
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
          { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 10_000) },
        );
      } catch (err) {
        throw new AuditChainReadError('AUDIT_CHAINS_UNREADABLE', `audit table ${this.#settings.table}: Query of ${pk} failed (${errorName(err)})`, { cause: err });
      }
      yield* out.Items ?? [];
      start = out.LastEvaluatedKey;
    } while (start);
  }

  close(): void {
    this.#ddb.destroy();
  }
}

/**
 * `keygate store init`: creates the audit table if missing (on-demand, key
 * pk + sk) and requests point-in-time recovery. No TTL: audit records are
 * never to expire. Idempotent: reports what it did or found.
 */
export async function initAuditTable(settings: DynamoDbAuditSettings, options: { readonly maxWaitSeconds?: number } = {}): Promise<string> {
  const ddb = auditClient(settings);
  const TableName = settings.table;
  try {
    let created = false;
    try {
      await ddb.send(
        new CreateTableCommand({
          TableName,
          BillingMode: 'PAY_PER_REQUEST',
          AttributeDefinitions: [
            { AttributeName: AUDIT_PK, AttributeType: 'S' },
            { AttributeName: AUDIT_SK, AttributeType: 'S' },
          ],
          KeySchema: [
            { AttributeName: AUDIT_PK, KeyType: 'HASH' },
            { AttributeName: AUDIT_SK, KeyType: 'RANGE' },
          ],
        }),
      );
      created = true;
    } catch (err) {
      if (!(err instanceof ResourceInUseException || errorName(err) === 'ResourceInUseException')) throw err;
    }
    const deadline = Date.now() + (options.maxWaitSeconds ?? 120) * 1000;
    for (;;) {
      const status = (await ddb.send(new DescribeTableCommand({ TableName }))).Table?.TableStatus;
      if (status === 'ACTIVE') break;
      if (Date.now() > deadline) throw new Error(`audit table ${TableName} is still ${status ?? 'unknown'} after ${options.maxWaitSeconds ?? 120} s`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    let pitr = 'point-in-time recovery requested';
    try {
      await ddb.send(new UpdateContinuousBackupsCommand({ TableName, PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true } }));
    } catch (err) {
      // Not fatal: the chains work without it; the operator is told.
      pitr = `point-in-time recovery NOT enabled (${errorName(err)})`;
    }
    return `audit table ${TableName}: ${created ? 'created' : 'exists'}, ${pitr}, no TTL`;
  } finally {
    ddb.destroy();
  }
}
