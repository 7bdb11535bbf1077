import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';

/**
 * The client of one shared table (nonces, audit, delegations, gateway budgets): region,
 * endpoint and credentials from the settings when given, else the AWS SDK's usual chain; 3 attempts
 * per call unless the settings say otherwise. Callers import this module on demand, so the AWS SDK
 * loads only when a DynamoDB setting is used. (The quarantine builds its own: the architecture rule keeps
 * broker/quarantine to itself, nonce/ and lib/.)
 */
export function dynamoDbClient(settings: Omit<DynamoDbTableSettings, 'kind' | 'table'>): DynamoDBClient {
  return new DynamoDBClient({
    ...(settings.region ? { region: settings.region } : {}),
    ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
    ...(settings.credentials ? { credentials: settings.credentials } : {}),
    maxAttempts: settings.maxAttempts ?? 3,
  });
}
