import { pcrSet } from '../admin.js';
import type { Baseline } from '../policy/baseline.js';
import { expectedPcr3, IAM_ROLE_ARN } from '../policy/decide.js';
import type { AllowRule } from '../policy/types.js';
import type { StoreSnapshot } from '../store/store.js';
import type { PcrValues } from '../../lib/pcrs.js';
import { OperationError } from './errors.js';
import { storedBaseline } from './stored-baselines.js';

/**
 * What one allowed measurement set of a bind is made of, for both ways a bind reaches the store (the
 * CLI on the store, the admin API on the broker): explicit PCRs, or a baseline's image PCRs (0/1/2/8)
 * with the parent's IAM role (PCR3) and instance (PCR4) added. One resolver, so both refuse the same
 * things with the same codes.
 */

/** A rule from a baseline or nitro-cli file, or the name of a baseline the store holds. */
export type BaselineSource = { readonly rule: AllowRule; readonly baseline?: Baseline } | { readonly stored: string };

/**
 * PCR3 for an IAM role ARN (what Nitro measures: SHA-384 of 48 zero bytes and the ARN).
 *
 * @throws OperationError INPUT_INVALID (not an IAM role ARN)
 */
export function pcr3OfRole(role: string): string {
  if (!IAM_ROLE_ARN.test(role)) throw new OperationError('INPUT_INVALID', `"${role.slice(0, 600)}" is not an IAM role ARN (arn:aws:iam::123456789012:role/NAME)`);
  return expectedPcr3(role);
}

/**
 * The rule a source gives (a stored name looked up in `snapshot`) with the extra PCRs (3, 4) added, and
 * the baseline to copy into the store with it (a file's; a stored one is already there).
 *
 * @throws OperationError BASELINE_NOT_FOUND; SchemaError (a PCR value of the wrong form)
 */
export function resolveRule(source: BaselineSource, snapshot: StoreSnapshot, extra: PcrValues<3 | 4>): { rule: AllowRule; baseline?: Baseline } {
  const { rule, baseline } = 'stored' in source ? ((b) => ({ rule: pcrSet(b.pcrs, b.name), baseline: b }))(storedBaseline(snapshot, source.stored)) : source;
  return { rule: pcrSet({ ...rule.pcrs, ...extra }, rule.baseline), ...(baseline ? { baseline } : {}) };
}
