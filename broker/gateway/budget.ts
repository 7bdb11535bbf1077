import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';
import { CodedError } from '../../lib/coded-error.js';

/**
 * Call budgets of the credential gateway: at most `limit` calls per fixed window per key (credential and
 * enclave identity). Replica-safe when shared (DynamoDB: one conditional update per call decides).
 */
export interface BudgetCounter {
  /**
   * Counts one call in the window starting at `windowStart` (epoch ms, `windowMs` long) if fewer than
   * `limit` were counted there: true when counted (the call may go), false when the budget is spent.
   *
   * @throws BudgetUnavailableError when the counter cannot answer (fail closed: the call is refused)
   */
  take(key: string, windowStart: number, windowMs: number, limit: number): Promise<boolean>;
  /** Readiness: resolves when the counter can answer. */
  check(): Promise<void>;
  close(): void;
}

/** Where budgets are counted: in this process (one broker), or a DynamoDB table shared by every replica. */
export type BudgetSettings = { readonly kind: 'memory'; readonly maxKeys?: number } | DynamoDbTableSettings;

/** The counter could not say whether a call fits its budget (throttled, unreachable): the call is refused. */
export class BudgetUnavailableError extends CodedError<'BUDGET_UNAVAILABLE'> {
  override readonly name = 'BudgetUnavailableError';
  /** The backend's own error name, for the audit. */
  readonly storeError: string;
  constructor(message: string, options: { cause?: unknown; storeError: string }) {
    super('BUDGET_UNAVAILABLE', message, options);
    this.storeError = options.storeError;
  }
}
