import type { KeyObject } from 'node:crypto';
import { approveBaseline, baselineDigest, countApprovals, type Approval, type Baseline } from '../policy/baseline.js';
import { parseBinding } from '../policy/schema.js';
import type { AllowRule, Binding } from '../policy/types.js';
import type { BindingStore, StoreSnapshot, StoreWriter } from '../store/store.js';
import { samePcrs } from '../../lib/pcrs.js';
import { OperationError } from './errors.js';

/**
 * Baselines as store operations: store a recorded baseline, approve the
 * stored copy, add a rule to a binding without touching its value. Each is
 * ONE `store.update` (atomic, optimistic concurrency on either backend), so
 * two admins approving at once both land, and nothing is half-written.
 * The CLI and the admin API call these; they speak store objects and coded
 * errors (OperationError), never flags.
 */

/**
 * The stored copy of `incoming` given what the store holds under its name: the same build (same digest)
 * keeps every approval either copy carries (by distinct key, stored ones first) and the stored CI
 * signature; another build under that name is refused, unless `replace` (then `incoming` as given:
 * approvals of the old build could not count for the new one anyway).
 *
 * @throws OperationError BASELINE_CONFLICT
 */
export function mergeBaseline(stored: Baseline | undefined, incoming: Baseline, replace = false): Baseline {
  if (!stored || replace) return incoming;
  if (baselineDigest(stored) !== baselineDigest(incoming)) {
    throw new OperationError(
      'BASELINE_CONFLICT',
      `the store holds another build named "${incoming.name}" (recorded ${stored.createdAt} by ${stored.builder}); baselines are history: record the new build under a new name`,
    );
  }
  const approvals = [...stored.approvals];
  for (const a of incoming.approvals) if (!approvals.some((s) => s.kid === a.kid)) approvals.push(a);
  const signature = stored.signature ?? incoming.signature;
  return { ...stored, ...(signature ? { signature } : {}), approvals };
}

/** Merges `incoming` into the store inside an update; returns what was written (unchanged: not written). */
async function putMerged(current: StoreSnapshot, tx: StoreWriter, incoming: Baseline, replace = false): Promise<{ baseline: Baseline; changed: boolean }> {
  const stored = current.baselines.get(incoming.name);
  const baseline = mergeBaseline(stored, incoming, replace);
  const changed = !stored || JSON.stringify(stored) !== JSON.stringify(baseline);
  if (changed) await tx.putBaseline(baseline);
  return { baseline, changed };
}

/**
 * Stores a recorded baseline (what `keygate record` wrote), approvals included. Idempotent: the same
 * build again adds only approvals the store lacks.
 *
 * @throws OperationError BASELINE_CONFLICT (another build under that name, without `replace`)
 */
export async function putStoredBaseline(store: BindingStore, baseline: Baseline, options: { replace?: boolean } = {}): Promise<{ baseline: Baseline; changed: boolean }> {
  return store.update((current, tx) => putMerged(current, tx, baseline, options.replace));
}

/**
 * Adds an approval by `adminKey` to the stored baseline `name` (signed inside the update, over the
 * digest of the copy it lands on). When `file` is given (the same build read from a baseline file), it
 * is merged in first, so approving a recorded file also stores it. A second approval by the same key
 * is not added.
 *
 * @throws OperationError BASELINE_NOT_FOUND (neither stored nor given), BASELINE_CONFLICT
 */
export async function approveStoredBaseline(
  store: BindingStore,
  name: string,
  adminKey: KeyObject,
  now: Date,
  file?: Baseline,
): Promise<{ baseline: Baseline; approval: Approval; added: boolean }> {
  return store.update(async (current, tx) => {
    const base = file ? mergeBaseline(current.baselines.get(name), file) : current.baselines.get(name);
    if (!base) throw new OperationError('BASELINE_NOT_FOUND', `no baseline "${name}" in the store (store it first: keygate baseline put FILE)`);
    const approval = await approveBaseline(base, adminKey, now);
    const added = !base.approvals.some((a) => a.kid === approval.kid);
    const baseline = added ? { ...base, approvals: [...base.approvals, approval] } : base;
    await putMerged(current, tx, baseline);
    return { baseline, approval, added };
  });
}

/** How many valid approvals a baseline carries against the admin keys a broker is configured with. */
export interface ApprovalStatus {
  readonly valid: number;
  readonly required: number;
  readonly adminKeys: number;
  /** What brokers with this configuration do with a rule naming it. */
  readonly approved: boolean;
}

export async function approvalStatus(baseline: Baseline, adminKeys: readonly KeyObject[], required: number): Promise<ApprovalStatus> {
  const valid = adminKeys.length ? await countApprovals(baseline, adminKeys) : 0;
  return { valid, required, adminKeys: adminKeys.length, approved: adminKeys.length > 0 && valid >= required };
}

function bindingOf(current: StoreSnapshot, secret: string): Binding {
  if (current.invalidBindings.has(secret)) {
    throw new OperationError('STORE_ENTRY_INVALID', `the binding of "${secret}" fails validation (see keygate list): fix or restore it first`);
  }
  const binding = current.bindings.get(secret);
  if (!binding) throw new OperationError('NOT_BOUND', `no binding for "${secret}"`);
  return binding;
}

/**
 * Adds an allow rule to an existing binding without touching its value: one update that also stores
 * (merges) the baseline the rule names. The version is NOT bumped: versions count values (agents cache
 * by version and refuse a lower one; the value and its ciphertext are unchanged, so a cached value stays
 * right), and a rule that adds readers changes no value. `updatedAt` records the change. A rule already
 * present (same PCRs) is not added twice; the baseline's approvals are still merged.
 *
 * @throws OperationError NOT_BOUND, STORE_ENTRY_INVALID, BASELINE_CONFLICT
 */
export async function addAllowRule(
  store: BindingStore,
  secret: string,
  rule: AllowRule,
  baseline: Baseline | undefined,
  now: Date,
): Promise<{ binding: Binding; added: boolean; baseline?: Baseline }> {
  return store.update(async (current, tx) => {
    const previous = bindingOf(current, secret);
    const stored = baseline ? (await putMerged(current, tx, baseline)).baseline : undefined;
    const added = !previous.allow.some((r) => samePcrs(r.pcrs, rule.pcrs));
    if (!added) return { binding: previous, added, ...(stored ? { baseline: stored } : {}) };
    const binding = parseBinding({ ...previous, allow: [...previous.allow, rule], updatedAt: now.toISOString() });
    await tx.putBinding(binding);
    return { binding, added, ...(stored ? { baseline: stored } : {}) };
  });
}

/** The stored baseline a rule may name. @throws OperationError BASELINE_NOT_FOUND */
export function storedBaseline(snapshot: StoreSnapshot, name: string): Baseline {
  const b = snapshot.baselines.get(name);
  if (!b) throw new OperationError('BASELINE_NOT_FOUND', `no baseline "${name}" in the store or as a file (store it: keygate baseline put FILE)`);
  return b;
}

/** One stored baseline as `keygate baseline list` and the admin API show it: its PCRs, approvers and whether brokers honour it. */
export interface BaselineRow extends ApprovalStatus {
  readonly name: string;
  readonly pcrs: Baseline['pcrs'];
  readonly createdAt: string;
  readonly builder: string;
  readonly signed: boolean;
  /** Key ids of the approvals it carries (valid or not: `valid` counts those that verify). */
  readonly approvals: readonly string[];
  readonly revoked: boolean;
}

/** Every stored baseline by name, with its approval status against `adminKeys` (the CLI on the store and the admin API share this). */
export async function listBaselines(snapshot: StoreSnapshot, adminKeys: readonly KeyObject[], required: number): Promise<BaselineRow[]> {
  const revoked = snapshot.revocations.baselines;
  return Promise.all(
    [...snapshot.baselines.values()]
      .sort((a, b) => a.name.localeCompare(b.name))
      .map(async (b) => ({
        name: b.name,
        pcrs: b.pcrs,
        createdAt: b.createdAt,
        builder: b.builder,
        signed: Boolean(b.signature),
        approvals: b.approvals.map((a) => a.kid),
        ...(await approvalStatus(b, adminKeys, required)),
        revoked: revoked.includes(b.name),
      })),
  );
}
