import { Quarantine, type QuarantineStore } from '../rate-limit.js';
import type { QuarantineLimits, QuarantineSettings } from './store.js';

/** A quarantine store, its readiness check (throws QuarantineUnavailableError) and how to release its clients (shutdown). */
export type OpenedQuarantine = QuarantineStore & { close(): void; check(): Promise<void> };

/**
 * The one place that builds the quarantine store from config. The DynamoDB
 * implementation (and with it the AWS SDK) is loaded only when configured.
 */
export async function openQuarantine(settings: QuarantineSettings, limits: QuarantineLimits): Promise<OpenedQuarantine> {
  switch (settings.kind) {
    case 'memory':
      return Object.assign(new Quarantine(limits.threshold, limits.windowMs, limits.quarantineMs), { close: () => {}, check: async () => {} });
    case 'dynamodb':
      return new (await import('./dynamodb-quarantine.js')).DynamoDbQuarantine(settings, limits);
  }
}

/** Creates the DynamoDB quarantine table (idempotent) for `keygate store init`; loads the SDK only when called. */
export async function initQuarantineTable(settings: Extract<QuarantineSettings, { kind: 'dynamodb' }>): Promise<{ table: string; created: boolean; ttlEnabled: boolean }> {
  return (await import('./dynamodb-quarantine.js')).initQuarantineTable(settings);
}
