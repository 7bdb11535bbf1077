import {
  DynamoDBClient,
  QueryCommand,
  ScanCommand,
  type AttributeValue,
} from '@aws-sdk/client-dynamodb';
import { dynamoDbClient } from '../aws/dynamodb-client.js';
import { ensureTable } from '../aws/dynamodb-table.js';
import { AuditChainReadError, CHAIN_ID, type AuditChainReader, type ChainSummary } from './chain.js';
import { AUDIT_PK, AUDIT_SK, CHAINS_PK, chainPartition, HEAD_ATTRIBUTES, LINE_ATTRIBUTE, seqSortKey } from './dynamodb-layout.js';
import type { AuditSettings } from './settings.js';

export type DynamoDbAuditSettings = Extract<AuditSettings, { kind: 'dynamodb' }>;

/** The audit table's client: region, endpoint and credentials from the settings, else the SDK's usual chain. */
export function auditClient(settings: DynamoDbAuditSettings): DynamoDBClient {
  return dynamoDbClient(settings);
}

export { AuditChainReadError };

/** Empty pages in a row a paginated read accepts (DynamoDB returns them only in corner cases): more is a broken endpoint. */
const MAX_EMPTY_PAGES = 16;
/** Distinct chains a scan of the record partitions may find (a broker start without a replicaId makes one). */
export const MAX_CHAINS = 100_000;

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
      const { id, head, started } = parseHeadItem(this.#settings.table, item);
      chains.push({ id, head, ...(started ? { started } : {}) });
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

  /**
   * The id of every chain holding records, head or not: a consistent,
   * key-only Scan (ProjectionExpression pk), keeping only the distinct ids
   * (memory bounded by the number of chains, not of records).
   */
  async listRecordChains(): Promise<string[]> {
    const prefix = chainPartition('');
    const ids = new Set<string>();
    const pages = new Pager(this.#settings.table, 'Scan');
    let start: Record<string, AttributeValue> | undefined;
    do {
      let out;
      try {
        out = await this.#ddb.send(
          new ScanCommand({
            TableName: this.#settings.table,
            ProjectionExpression: '#pk',
            ExpressionAttributeNames: { '#pk': AUDIT_PK },
            ConsistentRead: true,
            ...(start ? { ExclusiveStartKey: start } : {}),
          }),
          { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 10_000) },
        );
      } catch (err) {
        throw new AuditChainReadError('AUDIT_CHAINS_UNREADABLE', `audit table ${this.#settings.table}: Scan of the record partitions failed (${errorName(err)})`, { cause: err });
      }
      for (const item of out.Items ?? []) {
        const pk = item[AUDIT_PK]?.S;
        if (pk === undefined || !pk.startsWith(prefix)) continue; // the heads' partition
        const id = pk.slice(prefix.length);
        if (!CHAIN_ID.test(id)) throw new AuditChainReadError('AUDIT_CHAIN_MALFORMED', `audit table ${this.#settings.table}: an item in partition ${JSON.stringify(pk.slice(0, 80))} that no broker wrote`);
        ids.add(id);
        if (ids.size > MAX_CHAINS) throw new AuditChainReadError('AUDIT_CHAIN_MALFORMED', `audit table ${this.#settings.table}: more than ${MAX_CHAINS} chains hold records`);
      }
      start = out.LastEvaluatedKey;
      pages.next(out.Items?.length ?? 0, start);
    } while (start);
    return [...ids];
  }

  /** Items of partition `pk` in sort-key order (after `afterSk`, when given). */
  async *#query(pk: string, afterSk?: string): AsyncIterable<Record<string, AttributeValue>> {
    const pages = new Pager(this.#settings.table, `Query of ${pk}`, pk);
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
      pages.next(out.Items?.length ?? 0, start);
    } while (start);
  }

  close(): void {
    this.#ddb.destroy();
  }
}

/**
 * Guards a paginated read against an endpoint (broken or hostile) that never
 * ends it: every LastEvaluatedKey must differ from the one before (for a
 * Query: stay in the partition and move forward in sort-key order), and only
 * a few empty pages may follow one another. With the verifier stopping once
 * the records pass the head, that bounds what one chain's read can cost.
 */
class Pager {
  #previous: string | undefined;
  #previousSk: string | undefined;
  #empty = 0;

  constructor(
    private readonly table: string,
    private readonly what: string,
    /** A Query's partition: its keys must stay in it. */
    private readonly partition?: string,
  ) {}

  next(items: number, key: Record<string, AttributeValue> | undefined): void {
    if (!key) return;
    const fail = (why: string): never => {
      throw new AuditChainReadError('AUDIT_CHAINS_UNREADABLE', `audit table ${this.table}: ${this.what}: pagination ${why}; the endpoint is broken or not DynamoDB`);
    };
    const text = JSON.stringify(key);
    if (text === this.#previous) fail('returned the same LastEvaluatedKey twice');
    this.#previous = text;
    if (this.partition !== undefined) {
      const sk = key[AUDIT_SK]?.S;
      if (key[AUDIT_PK]?.S !== this.partition || sk === undefined) fail('returned a LastEvaluatedKey outside the partition');
      if (this.#previousSk !== undefined && sk! <= this.#previousSk) fail('went backwards');
      this.#previousSk = sk;
    }
    this.#empty = items === 0 ? this.#empty + 1 : 0;
    if (this.#empty > MAX_EMPTY_PAGES) fail(`returned ${this.#empty} empty pages in a row`);
  }
}

/**
 * `keygate store init`: creates the audit table if missing (on-demand, key
 * pk + sk) and requests point-in-time recovery. No TTL: audit records are
 * never to expire. Idempotent: reports what it did or found.
 */
export async function initAuditTable(settings: DynamoDbAuditSettings, options: { readonly maxWaitSeconds?: number } = {}): Promise<string> {
  const ddb = auditClient(settings);
  try {
    const done = await ensureTable(ddb, { table: settings.table, sortKey: true, pointInTimeRecovery: true, ...(options.maxWaitSeconds !== undefined ? { maxWaitSeconds: options.maxWaitSeconds } : {}) });
    // PITR not fatal: the chains work without it; the operator is told.
    const pitr = done.pitr?.requested ? 'point-in-time recovery requested' : `point-in-time recovery NOT enabled (${done.pitr && !done.pitr.requested ? done.pitr.error : 'unknown'})`;
    return `audit table ${settings.table}: ${done.created ? 'created' : 'exists'}, ${pitr}, no TTL`;
  } finally {
    ddb.destroy();
  }
}
