/**
 * The 202 answer of `POST /v1/secrets` for a secret that needs human approval: nothing is released, and
 * the pending request(s) are named. Unauthenticated like every error body: a relay can forge or drop it,
 * so the agent only ever waits and asks again on it (a denial of service at worst), never accepts a value.
 */
export interface PendingApproval {
  /** The request's id (what `keygate approvals grant ID` names). */
  readonly id: string;
  readonly secret: string;
  readonly version: number;
  /** ISO time after which the request can no longer be granted or used. */
  readonly expiresAt: string;
}

export interface ApprovalPendingAnswer {
  readonly error: { readonly code: 'APPROVAL_PENDING'; readonly message: string };
  readonly approvals: readonly PendingApproval[];
}
