import type { ApprovalRequest } from './request.js';

/**
 * Where pending (and finished) approval requests live: beside the store they belong to, so they survive a
 * broker restart and every replica sees the same ones. File store: `<store>/approvals/<id>.json`; DynamoDB
 * store: partition `pk = "approval"` of the store's table (never the store's own `pk = "store"` partition,
 * which the store loads and validates whole). Implementations are chosen by open-approvals.ts.
 *
 * Every change is conditional (create: only if absent; replace: only if the stored revision is the one
 * read), so concurrent grants, denials and single-use releases on any number of brokers and CLIs never
 * overwrite each other: a lost race re-reads and tries again, or fails.
 */
export interface ApprovalStore {
  /** Every stored request that validates (an invalid one is skipped: it can authorise nothing); newest last. */
  list(): Promise<ApprovalRequest[]>;
  /**
   * One request by id, or undefined when there is none.
   *
   * @throws ApprovalError APPROVAL_STORE_INVALID when the stored one fails validation
   */
  get(id: string): Promise<ApprovalRequest | undefined>;
  /** Stores a new request (rev 1); false when one with its id exists. */
  create(request: ApprovalRequest): Promise<boolean>;
  /** Replaces a request with `next` (rev = stored rev + 1) only if the stored revision is still `next.rev - 1`; false otherwise. */
  replace(next: ApprovalRequest): Promise<boolean>;
  /** Deletes a finished request (housekeeping past its retention); nothing when it is gone already. */
  remove(id: string): Promise<void>;
  /** Readiness: resolves when the store can answer. */
  check(): Promise<void>;
  close(): void;
}
