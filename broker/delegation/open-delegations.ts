import { join } from 'node:path';
import type { StoreLocation } from '../store/open-store.js';
import type { DelegationRegistry } from './registry.js';
import type { StaticAwsCredentials } from '../../lib/aws-settings.js';

/**
 * The one place that builds the delegation registry: beside the configured store (a file store's
 * `delegations/` directory, or the DynamoDB store's table, its own partition). The DynamoDB
 * implementation (and the AWS SDK) loads only when the store is on DynamoDB.
 */
export async function openDelegationRegistry(store: StoreLocation, options: { readonly credentials?: StaticAwsCredentials } = {}): Promise<DelegationRegistry> {
  if (typeof store === 'string') return new (await import('./file-delegations.js')).FileDelegationRegistry(join(store, 'delegations'));
  const { DynamoDbDelegationRegistry } = await import('./dynamodb-delegations.js');
  return new DynamoDbDelegationRegistry({
    kind: 'dynamodb',
    table: store.table,
    ...(store.region ? { region: store.region } : {}),
    ...(store.endpoint ? { endpoint: store.endpoint } : {}),
    ...(options.credentials ? { credentials: options.credentials } : {}),
  });
}
