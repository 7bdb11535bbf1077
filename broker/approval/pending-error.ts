import { BrokerError } from '../errors.js';
import type { PendingApproval } from '../protocol/index.js';

/** The requests each 202 answer names, kept beside its error (BrokerError's name is fixed, so no subclass). */
const pendingOf = new WeakMap<BrokerError, readonly PendingApproval[]>();

/** The 202 answer as an error of the release call: nothing released, these requests await approval. */
export function approvalPendingError(message: string, approvals: readonly PendingApproval[]): BrokerError {
  const err = new BrokerError('APPROVAL_PENDING', message);
  pendingOf.set(err, approvals);
  return err;
}

/** The pending requests of an APPROVAL_PENDING error, or undefined for any other error. */
export function pendingApprovalsOf(err: BrokerError): readonly PendingApproval[] | undefined {
  return pendingOf.get(err);
}
