import { parseBinding } from '../policy/schema.js';
import type { Binding, Revocations } from '../policy/types.js';
import type { BindingStore } from '../store/store.js';
import { OperationError } from './errors.js';

/**
 * The inverse of each `keygate revoke` form, so a revocation is undone by a command (one atomic store
 * update), not by editing JSON. Undoing names exactly what it undoes: anything named that is not
 * revoked refuses the whole operation (NOT_REVOKED) and nothing is written, so a mistyped hash is
 * noticed instead of silently leaving the intended entry revoked.
 */

/**
 * Makes a revoked secret releasable again, with its current value and policy. The version is not
 * bumped (the value did not change; versions count values, see addAllowRule).
 *
 * @throws OperationError NOT_BOUND, NOT_REVOKED, STORE_ENTRY_INVALID
 */
export async function unrevokeSecret(store: BindingStore, secret: string, now = new Date()): Promise<Binding> {
  return store.update(async (current, tx) => {
    if (current.invalidBindings.has(secret)) throw new OperationError('STORE_ENTRY_INVALID', `the binding of "${secret}" fails validation (see keygate list): fix or restore it first`);
    const previous = current.bindings.get(secret);
    if (!previous) throw new OperationError('NOT_BOUND', `no binding for "${secret}"`);
    if (!previous.revoked) throw new OperationError('NOT_REVOKED', `the secret "${secret}" is not revoked`);
    const binding = parseBinding({ ...previous, revoked: false, updatedAt: now.toISOString() });
    await tx.putBinding(binding);
    return binding;
  });
}

/**
 * Removes identity-wide revocations (PCR0 values, instances, baselines). PCR0 values and instance ids
 * compare case-insensitively (revoke stores them lower-case).
 *
 * @throws OperationError NOT_REVOKED (nothing removed), STORE_ENTRY_INVALID (the revocation list fails validation)
 */
export async function unrevokeIdentities(store: BindingStore, remove: Partial<Revocations>): Promise<Revocations> {
  return store.update(async (current, tx) => {
    // What a broken list revokes is unknown: rewriting it from nothing would drop every other revocation.
    if (current.revocationsProblem) {
      throw new OperationError('STORE_ENTRY_INVALID', `the revocation list fails validation (${current.revocationsProblem.message}): fix or restore it first`);
    }
    const r = current.revocations;
    const missing: string[] = [];
    const without = (list: readonly string[], drop: readonly string[] = [], what: string, fold: boolean): string[] => {
      const wanted = drop.map((x) => (fold ? x.toLowerCase() : x));
      for (const w of wanted) if (!list.includes(w)) missing.push(`${what} ${w}`);
      return list.filter((x) => !wanted.includes(x));
    };
    const next: Revocations = {
      pcr0: without(r.pcr0, remove.pcr0, 'PCR0', true),
      instances: without(r.instances, remove.instances, 'instance', true),
      baselines: without(r.baselines, remove.baselines, 'baseline', false),
    };
    if (missing.length) throw new OperationError('NOT_REVOKED', `not revoked (nothing was changed): ${missing.join(', ')}`);
    await tx.putRevocations(next);
    return next;
  });
}
