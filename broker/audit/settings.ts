/**
 * Where the audit records go, as configured (`audit` in the broker config).
 * Types only: config validation, the sink factory, the CLI and the S3
 * archive all import them.
 */
import type { DynamoDbTableSettings, StaticAwsCredentials } from '../../lib/aws-settings.js';

/** The S3 archive `keygate audit export` writes sealed segments to (Object Lock, compliance mode). */
export interface AuditArchiveSettings {
  /** A bucket created with Object Lock enabled. */
  readonly bucket: string;
  /** Key prefix for this deployment's segments (e.g. `keygate/audit/`). Default ''. */
  readonly prefix?: string;
  /** Compliance-mode retention of each segment, in days from its export. */
  readonly retentionDays: number;
  /** Overrides AWS_REGION for S3. */
  readonly region?: string;
  /** Overrides AWS_ENDPOINT_URL for S3. */
  readonly endpoint?: string;
  /** Only from code, never from a config file. */
  readonly credentials?: StaticAwsCredentials;
  /** Deadline of one S3 operation in ms, SDK retries included. Default 10 000. */
  readonly requestTimeoutMs?: number;
}

/** The audit sink: the hash-chained file under stateDir (default, one broker), or one chain per replica in a DynamoDB table. */
export type AuditSettings =
  | { readonly kind: 'file' }
  | (DynamoDbTableSettings & {
      /**
       * This replica's chain id (CHAIN_ID pattern). Set it to continue one chain across restarts; a process
       * that starts with the id of a live replica takes the chain over and the other stops writing (as with
       * the file log's lock). Default: a new id per start.
       */
      readonly replicaId?: string;
      /** Records per DynamoDB transaction (group commit), seal and chain head included: at most 100. Default 100. */
      readonly maxBatchItems?: number;
      readonly archive?: AuditArchiveSettings;
    });
