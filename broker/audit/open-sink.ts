import { resolve as resolvePath } from 'node:path';
import type { Logger } from '../log.js';
import { AuditLog } from './log.js';
import type { AuditSigner } from './chain.js';
import type { AuditSettings } from './settings.js';
import type { AuditSink } from './sink.js';

/** An open audit sink, with what the broker needs besides appending. */
export interface OpenedAuditSink {
  readonly sink: AuditSink & {
    /** Stops for good without writing again (the file lock or the chain was taken over). */
    abandon(reason: string): void;
    /** Readiness of a shared audit store (DynamoDB: one consistent read of this replica's chain head). The file log has none: `healthy` covers it. */
    check?(): Promise<void>;
  };
  /** Where the records go, for the start log line. */
  readonly where: Readonly<Record<string, unknown>>;
}

export interface OpenAuditSinkOptions {
  readonly log?: Logger;
  /** File kind: rotation size of the live file. */
  readonly maxFileBytes?: number;
}

/**
 * The one place that builds the audit sink from config: the hash-chained file
 * (`file`, default: one broker) or this replica's chain in a DynamoDB table.
 * The DynamoDB sink (and with it the AWS SDK) is loaded only when configured.
 */
export async function openAuditSink(settings: AuditSettings, file: string, signer: AuditSigner, options: OpenAuditSinkOptions = {}): Promise<OpenedAuditSink> {
  switch (settings.kind) {
    case 'file': {
      const sink = await AuditLog.open(file, signer, { ...(options.log ? { log: options.log } : {}), ...(options.maxFileBytes ? { maxFileBytes: options.maxFileBytes } : {}) });
      return { sink, where: { kind: 'file', file: resolvePath(file), ...(options.maxFileBytes ? { maxFileBytes: options.maxFileBytes } : {}) } };
    }
    case 'dynamodb': {
      const { DynamoDbAuditSink } = await import('./dynamodb-sink.js');
      const sink = await DynamoDbAuditSink.open(settings, signer, options.log ? { log: options.log } : {});
      return { sink, where: { kind: 'dynamodb', table: sink.table, chain: sink.chainId, seq: sink.head.seq } };
    }
  }
}

/** Creates the DynamoDB audit table (idempotent) for `keygate store init`; loads the SDK only when called. */
export async function initAuditTable(settings: Extract<AuditSettings, { kind: 'dynamodb' }>): Promise<string> {
  return (await import('./dynamodb-chains.js')).initAuditTable(settings);
}
