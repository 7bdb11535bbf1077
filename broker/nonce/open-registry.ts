import { MemoryNonceRegistry } from './memory-registry.js';
import type { NonceRegistry, NonceRegistrySettings } from './registry.js';

/**
 * The one place that builds the nonce registry from config. The DynamoDB
 * implementation (and with it the AWS SDK) is loaded only when configured.
 */
export async function openNonceRegistry(settings: NonceRegistrySettings = { kind: 'memory' }): Promise<NonceRegistry> {
  switch (settings.kind) {
    case 'memory':
      return new MemoryNonceRegistry(settings.maxRemembered);
    case 'dynamodb':
      return new (await import('./dynamodb-registry.js')).DynamoDbNonceRegistry(settings);
  }
}

/** Creates the DynamoDB nonce table (idempotent) for `keygate store init`; loads the SDK only when called. */
export async function initNonceTable(settings: Extract<NonceRegistrySettings, { kind: 'dynamodb' }>): Promise<{ table: string; created: boolean; ttlEnabled: boolean }> {
  return (await import('./dynamodb-registry.js')).initNonceTable(settings);
}
