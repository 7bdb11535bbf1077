import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import { CodedError } from '../../lib/coded-error.js';
import type { ApprovalPolicy, ApproverKey, Binding } from '../policy/types.js';
import { INSTANCE_ID_BODY, ISO_TIME, SECRET_NAME } from '../policy/schema.js';
import { PCR_HEX } from '../../lib/pcrs.js';

/**
 * Human approval of release requests, as pure functions: the stored request, its canonical digest, grant
 * verification and the request's state at a given time. No I/O here (the store is approval-store.ts).
 */

/** The enclave a request was made for: a release needs the very same enclave (module id and image) to ask again. */
export interface ApprovalIdentity {
  readonly moduleId: string;
  readonly pcr0: string;
  readonly pcr1: string;
  readonly pcr2: string;
  /** The EC2 instance the module id names, or null. */
  readonly instance: string | null;
}

/** One approver's signed decision on one request. */
export interface ApprovalSignature {
  /** The approver key's RFC 7638 thumbprint. */
  readonly kid: string;
  /** Base64url Ed25519 signature over `approvalDigest(request, decision)`. */
  readonly sig: string;
  /** ISO time the store accepted it. */
  readonly at: string;
}

/**
 * How a request ended (set by the broker only): `released` (its approval was used, single use),
 * `denied`, `expired`; `pending` while open.
 */
export type ApprovalState = 'pending' | 'released' | 'denied' | 'expired';

/** A release request awaiting (or past) human approval, as stored. */
export interface ApprovalRequest {
  readonly id: string;
  readonly secret: string;
  /** The binding version the approval is for: a rotation or re-bind makes it void. */
  readonly version: number;
  readonly identity: ApprovalIdentity;
  readonly createdAt: string;
  readonly expiresAt: string;
  /** Grants from distinct approvers of the binding, in arrival order. */
  readonly grants: readonly ApprovalSignature[];
  readonly denial?: ApprovalSignature;
  readonly state: ApprovalState;
  /** Set with a terminal state: when it was reached (broker time). */
  readonly closedAt?: string;
  /** Grants (approver kids) already audited by the broker's sweep while the request was open: not audited again when it ends. */
  readonly audited?: readonly string[];
  /** false: closed by the broker's sweep (denied or expired) before the enclave asked again; its next request is told once. */
  readonly notified?: boolean;
  /** Optimistic concurrency: every write is conditional on the revision read, and bumps it. */
  readonly rev: number;
}

export type ApprovalErrorCode =
  /** No request with that id. */
  | 'APPROVAL_NOT_FOUND'
  /** The key is not one of the binding's approvers. */
  | 'APPROVAL_NOT_APPROVER'
  /** The signature does not verify over this request's digest (wrong key, another request, altered). */
  | 'APPROVAL_BAD_SIGNATURE'
  /** The request is not the one the approver reviewed: its digest differs from the one given (`--digest`). */
  | 'APPROVAL_CHANGED'
  /** The request is no longer pending (granted and used, denied, expired). */
  | 'APPROVAL_CLOSED'
  /** The request's window has passed. */
  | 'APPROVAL_EXPIRED'
  /** The binding changed since the request (rotated, re-bound, unbound, approval dropped): it is void. */
  | 'APPROVAL_STALE'
  /** Too many open requests (for this parent instance, or in all): none is created until some end. */
  | 'APPROVAL_LIMIT'
  /** A stored request fails validation, or a write lost too many races. */
  | 'APPROVAL_STORE_INVALID'
  /** The approval store cannot be read or written (DynamoDB throttled or unreachable). */
  | 'APPROVAL_STORE_UNAVAILABLE';

export class ApprovalError extends CodedError<ApprovalErrorCode> {
  override readonly name = 'ApprovalError';
}

export const APPROVAL_ID = /^apr_[0-9a-f]{32}$/;

/**
 * The canonical bytes an approver signs: UTF-8 of a JSON array in a fixed order (no key ordering to
 * get wrong, no whitespace):
 *   ["keygate-approval-v1", decision, id, secret, version, moduleId, pcr0, pcr1, pcr2, instance|null, createdAt, expiresAt]
 * `decision` is "grant" or "deny", so a grant can never be replayed as a denial or the other way round, and
 * the id, identity and times tie it to exactly this request.
 */
export function approvalStatement(request: Pick<ApprovalRequest, 'id' | 'secret' | 'version' | 'identity' | 'createdAt' | 'expiresAt'>, decision: 'grant' | 'deny'): string {
  const i = request.identity;
  return JSON.stringify(['keygate-approval-v1', decision, request.id, request.secret, request.version, i.moduleId, i.pcr0, i.pcr1, i.pcr2, i.instance, request.createdAt, request.expiresAt]);
}

/** SHA-256 of the canonical statement: the 32 bytes the Ed25519 signature covers. */
export function approvalDigest(request: Pick<ApprovalRequest, 'id' | 'secret' | 'version' | 'identity' | 'createdAt' | 'expiresAt'>, decision: 'grant' | 'deny'): Buffer {
  return createHash('sha256').update(approvalStatement(request, decision), 'utf8').digest();
}

/** True when `sig` is `approver`'s Ed25519 signature over the request's digest for `decision`. */
export function signatureValid(request: ApprovalRequest, decision: 'grant' | 'deny', approver: ApproverKey, sig: string): boolean {
  try {
    const key = createPublicKey({ key: { ...approver.jwk }, format: 'jwk' });
    return verifySignature(null, approvalDigest(request, decision), key, Buffer.from(sig, 'base64url'));
  } catch {
    return false;
  }
}

/**
 * Checks a signed decision before the store takes it: the key is one of the binding's approvers, and its
 * signature covers this request. Returns the approver.
 *
 * @throws ApprovalError APPROVAL_NOT_APPROVER, APPROVAL_BAD_SIGNATURE
 */
export function checkSignedDecision(request: ApprovalRequest, policy: ApprovalPolicy, decision: 'grant' | 'deny', kid: string, sig: string): ApproverKey {
  const approver = policy.approvers.find((a) => a.kid === kid);
  if (!approver) throw new ApprovalError('APPROVAL_NOT_APPROVER', `key ${kid} is not an approver of "${request.secret}"`);
  if (!signatureValid(request, decision, approver, sig)) throw new ApprovalError('APPROVAL_BAD_SIGNATURE', `the signature does not verify over request ${request.id} with key ${kid}`);
  return approver;
}

/** The distinct approvers of `policy` whose grant on `request` verifies (a key counts once, however often it signed). */
export function validGrants(request: ApprovalRequest, policy: ApprovalPolicy): string[] {
  const counted = new Set<string>();
  for (const grant of request.grants) {
    if (counted.has(grant.kid)) continue;
    const approver = policy.approvers.find((a) => a.kid === grant.kid);
    if (approver && signatureValid(request, 'grant', approver, grant.sig)) counted.add(grant.kid);
  }
  return [...counted];
}

/** What a request comes to at `now`, judged against the binding's current policy (a removed approver's grant no longer counts). */
export type ApprovalStatus =
  | { readonly kind: 'pending'; readonly granted: readonly string[] }
  | { readonly kind: 'approved'; readonly granted: readonly string[] }
  | { readonly kind: 'denied'; readonly by: string | undefined; readonly granted: readonly string[] }
  | { readonly kind: 'expired'; readonly granted: readonly string[] }
  | { readonly kind: 'released' };

/** How far ahead of the judging clock a request's creation may lie (a CLI's clock behind the broker's that made it). */
export const APPROVAL_CLOCK_SKEW_MS = 5 * 60_000;

/**
 * True when the request's window is not one the broker can have opened under `policy`: longer than the
 * binding's window, or created in the future. The times are in the signed statement, but a store writer
 * can widen them before anyone signs; the binding's window bounds what a signature can authorise.
 */
function outsidePolicyWindow(request: ApprovalRequest, policy: ApprovalPolicy, now: number): boolean {
  const created = Date.parse(request.createdAt);
  const expires = Date.parse(request.expiresAt);
  return !(expires - created <= policy.windowSeconds * 1000) || created > now + APPROVAL_CLOCK_SKEW_MS;
}

export function approvalStatus(request: ApprovalRequest, policy: ApprovalPolicy, now: number): ApprovalStatus {
  const granted = validGrants(request, policy);
  if (request.state === 'released') return { kind: 'released' };
  if (request.state === 'denied') return { kind: 'denied', by: request.denial?.kid, granted };
  // A denial is final even before the broker has marked it: checked before the grants.
  if (request.denial) {
    const approver = policy.approvers.find((a) => a.kid === request.denial!.kid);
    if (approver && signatureValid(request, 'deny', approver, request.denial.sig)) return { kind: 'denied', by: request.denial.kid, granted };
  }
  if (request.state === 'expired' || now >= Date.parse(request.expiresAt) || outsidePolicyWindow(request, policy, now)) return { kind: 'expired', granted };
  return granted.length >= policy.required ? { kind: 'approved', granted } : { kind: 'pending', granted };
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const KID = /^[A-Za-z0-9_-]{43}$/;
const SIG = /^[A-Za-z0-9_-]{86}$/;
/** Printable ASCII without spaces: what `approvals list` prints of an identity can carry no terminal escapes. */
const MODULE_ID = /^[\x21-\x7e]{1,256}$/;
const INSTANCE_ID = new RegExp(`^${INSTANCE_ID_BODY}$`);

function parseSignature(v: unknown): ApprovalSignature | undefined {
  if (!isObj(v) || typeof v.kid !== 'string' || !KID.test(v.kid) || typeof v.sig !== 'string' || !SIG.test(v.sig) || typeof v.at !== 'string' || !ISO_TIME.test(v.at)) return undefined;
  return { kid: v.kid, sig: v.sig, at: v.at };
}

/**
 * Validates a stored request (a file or an item anyone with store access could have written).
 *
 * @throws ApprovalError APPROVAL_STORE_INVALID
 */
export function parseApprovalRequest(value: unknown): ApprovalRequest {
  const bad = (what: string): never => {
    throw new ApprovalError('APPROVAL_STORE_INVALID', `stored approval request is invalid: ${what}`);
  };
  if (!isObj(value)) return bad('not an object');
  const v = value;
  if (typeof v.id !== 'string' || !APPROVAL_ID.test(v.id)) bad('id');
  if (typeof v.secret !== 'string' || !SECRET_NAME.test(v.secret)) bad('secret');
  if (!Number.isSafeInteger(v.version) || (v.version as number) < 1) bad('version');
  const i = v.identity;
  if (!isObj(i) || typeof i.moduleId !== 'string' || !MODULE_ID.test(i.moduleId)) return bad('identity');
  for (const k of ['pcr0', 'pcr1', 'pcr2'] as const) if (typeof i[k] !== 'string' || !PCR_HEX.test(i[k] as string)) bad(`identity.${k}`);
  if (i.instance !== null && (typeof i.instance !== 'string' || !INSTANCE_ID.test(i.instance))) bad('identity.instance');
  for (const k of ['createdAt', 'expiresAt'] as const) if (typeof v[k] !== 'string' || !ISO_TIME.test(v[k] as string)) bad(k);
  if (!Array.isArray(v.grants) || v.grants.length > 64) return bad('grants');
  const grants = v.grants.map((g) => parseSignature(g) ?? bad('grants[]'));
  const denial = v.denial === undefined ? undefined : (parseSignature(v.denial) ?? bad('denial'));
  if (!['pending', 'released', 'denied', 'expired'].includes(v.state as string)) bad('state');
  if (v.closedAt !== undefined && (typeof v.closedAt !== 'string' || !ISO_TIME.test(v.closedAt))) bad('closedAt');
  if (!Number.isSafeInteger(v.rev) || (v.rev as number) < 1) bad('rev');
  if (v.notified !== undefined && typeof v.notified !== 'boolean') bad('notified');
  if (v.audited !== undefined && (!Array.isArray(v.audited) || v.audited.length > 64 || v.audited.some((k) => typeof k !== 'string' || !KID.test(k)))) bad('audited');
  return {
    id: v.id as string,
    secret: v.secret as string,
    version: v.version as number,
    identity: { moduleId: i.moduleId, pcr0: i.pcr0 as string, pcr1: i.pcr1 as string, pcr2: i.pcr2 as string, instance: i.instance as string | null },
    createdAt: v.createdAt as string,
    expiresAt: v.expiresAt as string,
    grants,
    ...(denial ? { denial } : {}),
    state: v.state as ApprovalState,
    ...(v.closedAt !== undefined ? { closedAt: v.closedAt as string } : {}),
    ...(v.notified !== undefined ? { notified: v.notified as boolean } : {}),
    ...(v.audited !== undefined ? { audited: v.audited as string[] } : {}),
    rev: v.rev as number,
  };
}

/**
 * True when `binding` is no longer the one the request was made under: unbound, another version, approval
 * dropped, revoked, or changed since the request was created (`updatedAt` after `createdAt`: a revoke and
 * unrevoke keep the version, so grants given before a revocation must not survive it). Grants on such a
 * request authorise nothing; the enclave's next request starts a new one.
 */
export function bindingChangedSince(request: ApprovalRequest, binding: Binding | undefined): boolean {
  return !binding?.approval || binding.version !== request.version || binding.revoked || Date.parse(binding.updatedAt) > Date.parse(request.createdAt);
}

/** Same enclave: module id (so instance) and image PCR0/1/2. */
export function sameIdentity(a: ApprovalIdentity, b: ApprovalIdentity): boolean {
  return a.moduleId === b.moduleId && a.pcr0 === b.pcr0 && a.pcr1 === b.pcr1 && a.pcr2 === b.pcr2 && a.instance === b.instance;
}
