import { MemoryBudgetCounter } from './memory-budget.js';
import type { BudgetCounter, BudgetSettings } from './budget.js';

/** The one place that builds the gateway's budget counter; the DynamoDB one (and the AWS SDK) only when configured. */
export async function openBudgetCounter(settings: BudgetSettings = { kind: 'memory' }): Promise<BudgetCounter> {
  switch (settings.kind) {
    case 'memory':
      return new MemoryBudgetCounter(settings.maxKeys);
    case 'dynamodb':
      return new (await import('./dynamodb-budget.js')).DynamoDbBudgetCounter(settings);
  }
}
