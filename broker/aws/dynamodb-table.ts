import {
  CreateTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  ResourceInUseException,
  UpdateContinuousBackupsCommand,
  UpdateTimeToLiveCommand,
  type DynamoDBClient,
  type TableDescription,
} from '@aws-sdk/client-dynamodb';
import { CodedError } from '../../lib/coded-error.js';

/**
 * What `keygate store init` asks of every keygate table, in one place: create
 * it if missing (on-demand billing, string keys `pk` and optionally `sk`),
 * wait until it is active, turn TTL on for an attribute when asked (only if
 * it is off: enabling twice is an error on DynamoDB), and request
 * point-in-time recovery when asked (not fatal: the caller reports it).
 * Idempotent: safe from several machines and again later.
 */
export interface TableSpec {
  readonly table: string;
  /** Key schema `pk` (HASH) + `sk` (RANGE); otherwise `pk` alone. */
  readonly sortKey: boolean;
  /** The one attribute TTL may be on (turned on if off); undefined: TTL must be off (items never expire). */
  readonly ttlAttribute?: string;
  readonly pointInTimeRecovery?: boolean;
  /** How long to wait for the table to become active. Default 120. */
  readonly maxWaitSeconds?: number;
}

export interface TableInit {
  readonly created: boolean;
  /** `already`: TTL was on (on this attribute or, reported, on another); `enabled`: turned on now. */
  readonly ttl?: { readonly state: 'already' | 'enabled'; readonly attribute: string };
  /** `requested`, or why the request failed (the error's name). */
  readonly pitr?: { readonly requested: true } | { readonly requested: false; readonly error: string };
}

const errorName = (err: unknown): string => (err instanceof Error ? err.name : 'Error');

/**
 * An existing table is weaker than what keygate creates: another key schema (items would not fit, or fit
 * where nothing reads them), or TTL on an attribute whose items must never expire (a store version, a
 * reserved version, an audit chain head). Refused rather than reported as "exists".
 */
export class TableMismatchError extends CodedError<'TABLE_MISMATCH'> {
  override readonly name = 'TableMismatchError';
  constructor(message: string) {
    super('TABLE_MISMATCH', message);
  }
}

function keySchemaOf(table: TableDescription | undefined): string {
  const types = new Map((table?.AttributeDefinitions ?? []).map((a) => [a.AttributeName, a.AttributeType]));
  return (table?.KeySchema ?? []).map((k) => `${k.AttributeName} ${k.KeyType} ${types.get(k.AttributeName) ?? '?'}`).join(', ');
}

export async function ensureTable(ddb: DynamoDBClient, spec: TableSpec): Promise<TableInit> {
  const TableName = spec.table;
  let created = false;
  try {
    await ddb.send(
      new CreateTableCommand({
        TableName,
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }, ...(spec.sortKey ? [{ AttributeName: 'sk', AttributeType: 'S' as const }] : [])],
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }, ...(spec.sortKey ? [{ AttributeName: 'sk', KeyType: 'RANGE' as const }] : [])],
      }),
    );
    created = true;
  } catch (err) {
    if (!(err instanceof ResourceInUseException || errorName(err) === 'ResourceInUseException')) throw err;
  }
  const waitSeconds = spec.maxWaitSeconds ?? 120;
  const deadline = Date.now() + waitSeconds * 1000;
  let description: TableDescription | undefined;
  for (;;) {
    description = (await ddb.send(new DescribeTableCommand({ TableName }))).Table;
    if (description?.TableStatus === 'ACTIVE') break;
    if (Date.now() > deadline) throw new Error(`table ${TableName} is still ${description?.TableStatus ?? 'unknown'} after ${waitSeconds} s`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  const wanted = spec.sortKey ? 'pk HASH S, sk RANGE S' : 'pk HASH S';
  const found = keySchemaOf(description);
  if (found !== wanted) throw new TableMismatchError(`table ${TableName} exists with key schema (${found}); keygate needs (${wanted}): use another table name, or recreate it`);
  const current = (await ddb.send(new DescribeTimeToLiveCommand({ TableName }))).TimeToLiveDescription;
  const on = current?.TimeToLiveStatus === 'ENABLED' || current?.TimeToLiveStatus === 'ENABLING';
  if (on && current?.AttributeName !== spec.ttlAttribute) {
    throw new TableMismatchError(
      `table ${TableName} has TTL on "${current?.AttributeName ?? '?'}"; ${spec.ttlAttribute ? `keygate needs it on "${spec.ttlAttribute}"` : 'its items must never expire (TTL off)'}: DynamoDB would delete items keygate relies on. Turn that TTL off, or use another table`,
    );
  }
  let ttl: TableInit['ttl'];
  if (spec.ttlAttribute) {
    if (on) ttl = { state: 'already', attribute: spec.ttlAttribute };
    else {
      await ddb.send(new UpdateTimeToLiveCommand({ TableName, TimeToLiveSpecification: { AttributeName: spec.ttlAttribute, Enabled: true } }));
      ttl = { state: 'enabled', attribute: spec.ttlAttribute };
    }
  }
  let pitr: TableInit['pitr'];
  if (spec.pointInTimeRecovery) {
    try {
      await ddb.send(new UpdateContinuousBackupsCommand({ TableName, PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true } }));
      pitr = { requested: true };
    } catch (err) {
      pitr = { requested: false, error: errorName(err) };
    }
  }
  return { created, ...(ttl ? { ttl } : {}), ...(pitr ? { pitr } : {}) };
}
