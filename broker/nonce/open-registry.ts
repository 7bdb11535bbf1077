import { MemoryNonceRegistry } from './memory-registry.js';
import type { NonceRegistry, NonceRegistrySettings } from './registry.js';
import type { WorkerChannel } from '../cluster/channel.js';
import { PrimaryNonceRegistry } from './primary-registry.js';

/**
 * The one place that builds the nonce registry from config. The DynamoDB
 * implementation (and with it the AWS SDK) is loaded only when configured.
 * `viaPrimary`: this process is a broker worker; a memory registry is then the primary's.
 */
export async function openNonceRegistry(settings: NonceRegistrySettings = { kind: 'memory' }, viaPrimary?: WorkerChannel): Promise<NonceRegistry> {
  switch (settings.kind) {
    case 'memory':
      // A worker of `keygate broker --workers N`: the memory registry is the primary's, one for all workers.
      return viaPrimary ? new PrimaryNonceRegistry(viaPrimary) : new MemoryNonceRegistry(settings.maxRemembered);
    case 'dynamodb':
      return new (await import('./dynamodb-registry.js')).DynamoDbNonceRegistry(settings);
  }
}

/** Creates the DynamoDB nonce table (idempotent) for `keygate store init`; loads the SDK only when called. */
export async function initNonceTable(settings: Extract<NonceRegistrySettings, { kind: 'dynamodb' }>): Promise<{ table: string; created: boolean; ttlEnabled: boolean }> {
  return (await import('./dynamodb-registry.js')).initNonceTable(settings);
}
