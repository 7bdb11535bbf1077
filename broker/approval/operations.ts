import { createPublicKey, sign, type KeyObject } from 'node:crypto';
import { ed25519Thumbprint } from '../policy/schema.js';
import type { StoreSnapshot } from '../store/store.js';
import type { ApprovalStore } from './approval-store.js';
import { approvalDigest, approvalStatus, ApprovalError, bindingChangedSince, checkSignedDecision, signatureValid, type ApprovalRequest, type ApprovalStatus } from './request.js';

/** Operations behind `keygate approvals list|grant|deny`, shared by the CLI and tests. */

/** An approver's signed decision, as submitted to the store. */
export interface SignedDecision {
  readonly kid: string;
  readonly sig: string;
}

/** Rounds a grant or denial retries when another writer changed the request meanwhile. */
const MAX_ROUNDS = 8;

/** The RFC 7638 thumbprint of an Ed25519 key (private or public). */
export function approverKid(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  if (pub.asymmetricKeyType !== 'ed25519') throw new ApprovalError('APPROVAL_BAD_SIGNATURE', 'approval keys are Ed25519');
  return ed25519Thumbprint((pub.export({ format: 'jwk' }) as { x: string }).x);
}

/** Signs `decision` on `request` with an approver's Ed25519 private key: Ed25519 over approvalDigest (SHA-256 of the canonical statement). */
export function signDecision(request: ApprovalRequest, decision: 'grant' | 'deny', privateKey: KeyObject): SignedDecision {
  return { kid: approverKid(privateKey), sig: sign(null, approvalDigest(request, decision), privateKey).toString('base64url') };
}

/**
 * The request's digest as `approvals list` shows it (hex SHA-256 of its canonical grant statement, what a
 * grant signs): `approvals grant|deny --digest` pins the request reviewed, so one rewritten in the store
 * in between (another enclave, secret or window under the same id) is not signed.
 */
export function requestDigest(request: ApprovalRequest): string {
  return approvalDigest(request, 'grant').toString('hex');
}

/** A request as `keygate approvals list` shows it, judged against its binding now. */
export interface ApprovalView {
  readonly request: ApprovalRequest;
  /** pending, approved (k grants in, awaiting the enclave's next request), denied, expired, released, or stale (the binding changed). */
  readonly status: ApprovalStatus['kind'] | 'stale';
  /** Distinct approver keys whose grant counts now. */
  readonly granted: readonly string[];
  readonly required: number | null;
}

export function viewOf(request: ApprovalRequest, snapshot: StoreSnapshot, now: number): ApprovalView {
  const binding = snapshot.bindings.get(request.secret);
  if (!binding?.approval || bindingChangedSince(request, binding)) return { request, status: request.state === 'pending' ? 'stale' : request.state, granted: [], required: binding?.approval?.required ?? null };
  const status = approvalStatus(request, binding.approval, now);
  return { request, status: status.kind, granted: 'granted' in status ? status.granted : [], required: binding.approval.required };
}

/** Every stored request, with its status; `all` false: only the open ones (pending or approved, not yet used). */
export async function listApprovals(store: ApprovalStore, snapshot: StoreSnapshot, now: number, all = false): Promise<ApprovalView[]> {
  const views = (await store.list()).map((r) => viewOf(r, snapshot, now));
  return all ? views : views.filter((v) => v.status === 'pending' || v.status === 'approved');
}

/**
 * Adds an approver's signed grant or denial to a pending request, after checking it: the request exists
 * and is still open and inside its window, its binding is the version it was made for and still needs
 * approval, the key is one of the binding's approvers and the signature covers exactly this request.
 * A second grant by the same key changes nothing (a key counts once). Conditional write, retried on a race.
 *
 * @throws ApprovalError APPROVAL_NOT_FOUND, APPROVAL_STALE, APPROVAL_CLOSED, APPROVAL_EXPIRED, APPROVAL_NOT_APPROVER, APPROVAL_BAD_SIGNATURE
 */
export async function submitDecision(store: ApprovalStore, snapshot: StoreSnapshot, id: string, decision: 'grant' | 'deny', signed: SignedDecision, now: number): Promise<{ request: ApprovalRequest; changed: boolean }> {
  for (let round = 0; round < MAX_ROUNDS; round++) {
    const request = await store.get(id);
    if (!request) throw new ApprovalError('APPROVAL_NOT_FOUND', `no approval request ${id}`);
    const binding = snapshot.bindings.get(request.secret);
    if (!binding?.approval || bindingChangedSince(request, binding)) {
      throw new ApprovalError('APPROVAL_STALE', `"${request.secret}" changed since request ${id} was made (it was for version ${request.version}); the enclave's next request starts a new one`);
    }
    const approver = checkSignedDecision(request, binding.approval, decision, signed.kid, signed.sig);
    const status = approvalStatus(request, binding.approval, now);
    if (status.kind === 'expired') throw new ApprovalError('APPROVAL_EXPIRED', `request ${id} expired at ${request.expiresAt}`);
    if (status.kind !== 'pending' && status.kind !== 'approved') throw new ApprovalError('APPROVAL_CLOSED', `request ${id} is ${status.kind}`);
    const at = new Date(now).toISOString();
    let next: ApprovalRequest;
    if (decision === 'grant') {
      // A key counts once: a valid grant of this key stands; an entry of this key that does not verify is replaced.
      if (request.grants.some((g) => g.kid === signed.kid && signatureValid(request, 'grant', approver, g.sig))) return { request, changed: false };
      next = { ...request, grants: [...request.grants.filter((g) => g.kid !== signed.kid), { kid: signed.kid, sig: signed.sig, at }], rev: request.rev + 1 };
    } else {
      next = { ...request, denial: { kid: signed.kid, sig: signed.sig, at }, rev: request.rev + 1 };
    }
    if (await store.replace(next)) return { request: next, changed: true };
  }
  throw new ApprovalError('APPROVAL_STORE_INVALID', `request ${id} kept changing while the ${decision} was written; try again`);
}
