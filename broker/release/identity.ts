import { instanceIdOf, type EnclaveIdentity } from '../policy/decide.js';
import type { VerifiedDocument } from '../verify/index.js';
import { pcrsFromDocument } from '../../lib/pcrs.js';

/** What the policy sees of a verified document. */
export function identityOf(doc: VerifiedDocument): EnclaveIdentity {
  return { moduleId: doc.moduleId, pcrs: pcrsFromDocument(doc.pcrs), debug: doc.debug };
}

/** The key per-identity rate limits and quarantine count under; built only by `identityKeyOf`. */
export type IdentityKey = string & { readonly __identityKey: true };

/**
 * An enclave identity for abuse controls: its image (PCR0) on its EC2
 * instance (the module id when it names none), so restarting an enclave
 * does not reset its quarantine.
 */
export function identityKeyOf(identity: EnclaveIdentity): IdentityKey {
  return `${identity.pcrs[0] ?? '-'}|${instanceIdOf(identity.moduleId) ?? identity.moduleId}` as IdentityKey;
}
