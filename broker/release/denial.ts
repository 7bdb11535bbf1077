import type { BrokerErrorCode } from '../protocol/index.js';
import type { DenyReason } from '../policy/decide.js';

/**
 * Why a request, or one name of it, was refused, as the audit records it
 * (finer than the code the caller is shown). `auditCode` is the only place
 * the audit strings are built.
 */
export type DenialReason =
  /** The code the caller is shown tells it all: unverified document, rate limit, stale nonce, quarantine, bad request. */
  | { readonly kind: 'shown'; readonly code: BrokerErrorCode }
  /** The policy's decision for this name (broker/policy/decide.ts). */
  | { readonly kind: 'policy'; readonly reason: DenyReason }
  /** Allowed on its own, refused because another name of the same request was: all names or none. */
  | { readonly kind: 'batch' }
  /** A store file failing validation leaves unknown whom it governs (or the store cannot be read at all): nothing is released. */
  | { readonly kind: 'store'; readonly file: 'revocations.json' | 'unreachable' }
  /** The shared nonce registry could not say whether the nonce was used; its backend's error name is kept. */
  | { readonly kind: 'nonces'; readonly registryError: string }
  /** The shared quarantine could not say whether the identity is quarantined, or could not record a denial; its backend's error name is kept. */
  | { readonly kind: 'quarantine'; readonly storeError: string }
  /** The binding restricts instances by EC2 tag and EC2 could not be asked (unreachable, throttled, denied); its error name is kept. */
  | { readonly kind: 'instanceTags'; readonly ec2Error: string }
  /** The approval store (broker/approval) could not be read or written; its error code is kept. */
  | { readonly kind: 'approvals'; readonly storeError: string }
  /** The key provider could not decrypt this name's value; its own error name is kept for the operator. */
  | { readonly kind: 'provider'; readonly code: 'KMS_UNAVAILABLE' | 'SECRET_UNAVAILABLE'; readonly providerError: string }
  /** A delegation token refused (broker/delegation/gate.ts): the code shown and what exactly failed. */
  | { readonly kind: 'delegation'; readonly code: BrokerErrorCode; readonly detail: string };

/** The audit record's `code` for a reason. */
export function auditCode(reason: DenialReason): string {
  switch (reason.kind) {
    case 'shown':
      return reason.code;
    case 'policy':
      return reason.reason;
    case 'batch':
      return 'BATCH_DENIED';
    case 'store':
      return `STORE_UNAVAILABLE:${reason.file}`;
    case 'nonces':
      return `STORE_UNAVAILABLE:nonces:${reason.registryError}`;
    case 'quarantine':
      return `STORE_UNAVAILABLE:quarantine:${reason.storeError}`;
    case 'instanceTags':
      return `INSTANCE_TAGS_UNAVAILABLE:${reason.ec2Error}`;
    case 'provider':
      return `${reason.code}:${reason.providerError}`;
    case 'delegation':
      return `${reason.code}:${reason.detail}`;
    case 'approvals':
      return `STORE_UNAVAILABLE:approvals:${reason.storeError}`;
  }
}

/**
 * A refused request: what the caller is shown, and what is audited. A refusal
 * that does not depend on the names asked for is one sampled record
 * (`request`); per-name decisions are one record per requested name (`names`).
 */
export type Denial = { readonly shown: BrokerErrorCode; readonly message: string } & (
  | { readonly scope: 'request'; readonly reason: DenialReason }
  | { readonly scope: 'names'; readonly reasons: ReadonlyMap<string, DenialReason> }
);

/** A name-independent refusal, audited as `reason` (by default: the code shown). */
export function refusal(shown: BrokerErrorCode, message: string, reason: DenialReason = { kind: 'shown', code: shown }): Denial {
  return { shown, message, scope: 'request', reason };
}

/** Every requested name refused for the same reason: one record per name, each audited as the code shown. */
export function everyNameDenied(shown: BrokerErrorCode, message: string, names: readonly string[]): Denial {
  return { shown, message, scope: 'names', reasons: new Map<string, DenialReason>(names.map((name) => [name, { kind: 'shown', code: shown }])) };
}

/** Per-name decisions: every requested name not in `refused` is audited as BATCH_DENIED. */
export function namesDenied(shown: BrokerErrorCode, message: string, names: readonly string[], refused: ReadonlyMap<string, DenialReason>): Denial {
  const reasons = new Map<string, DenialReason>(names.map((name) => [name, { kind: 'batch' }]));
  for (const [name, reason] of refused) reasons.set(name, reason);
  return { shown, message, scope: 'names', reasons };
}
