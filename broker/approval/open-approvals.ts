import type { StoreLocation } from '../store/open-store.js';
import type { ApprovalStore } from './approval-store.js';
import { FileApprovalStore } from './file-approvals.js';

/**
 * The one place that builds the approval store: beside the configured bindings store (its directory, or
 * its DynamoDB table). The DynamoDB implementation (and the AWS SDK) is loaded only when configured.
 */
export async function openApprovalStore(store: StoreLocation): Promise<ApprovalStore> {
  if (typeof store === 'string') return new FileApprovalStore(store);
  return new (await import('./dynamodb-approvals.js')).DynamoDbApprovalStore(store);
}
