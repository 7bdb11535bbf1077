import { instanceIdOf, type EnclaveIdentity } from '../policy/decide.js';
import type { VerifiedDocument } from '../verify/index.js';

/** What the policy sees of a verified document. */
export function identityOf(doc: VerifiedDocument): EnclaveIdentity {
  const pcrs = new Map<number, string>();
  for (const [i, v] of doc.pcrs) pcrs.set(i, Buffer.from(v).toString('hex'));
  return { moduleId: doc.moduleId, pcrs, debug: doc.debug };
}

/** The key per-identity rate limits and quarantine count under; built only by `identityKeyOf`. */
export type IdentityKey = string & { readonly __identityKey: true };

/**
 * An enclave identity for abuse controls: its image (PCR0) on its EC2
 * instance (the module id when it names none), so restarting an enclave
 * does not reset its quarantine.
 */
export function identityKeyOf(identity: EnclaveIdentity): IdentityKey {
  return `${identity.pcrs.get(0) ?? '-'}|${instanceIdOf(identity.moduleId) ?? identity.moduleId}` as IdentityKey;
}
