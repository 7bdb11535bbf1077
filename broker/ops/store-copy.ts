import { CodedError } from '../../lib/coded-error.js';
import { canonicalJson, type Baseline } from '../policy/baseline.js';
import type { Binding, Revocations } from '../policy/types.js';
import type { BindingStore, StoreSnapshot, StoreWriter } from '../store/store.js';

/**
 * `keygate store copy`: moves what one store holds (an embedded file store)
 * into another (the shared DynamoDB store), through the store interface only:
 * bindings as stored (the provider's ciphertext, never decrypted), baselines
 * with their approvals, the revocation list, and the versions reserved for
 * unbound names (so a name unbound before the move never gets a version an
 * agent may have seen). Every write is an ordinary `update` of the destination
 * (its optimistic concurrency applies).
 *
 * Idempotent: an item the destination already holds with the same content is
 * left alone; one it holds with different content is a conflict, never
 * overwritten. Conflicts, and items too large for the destination (checked
 * through `BindingStore.checkUpdate`, item by item and batch by batch), are
 * found before anything is written, and then nothing is written at all: a
 * partial copy could serve bindings without the revocations meant to restrict
 * them. A destination that fails between two batches (unreachable, throttled
 * past its deadline) ends the copy with STORE_COPY_INTERRUPTED carrying what
 * was written; a re-run skips that and completes the copy.
 */

export type StoreCopyErrorCode =
  /** The source has entries failing validation: nothing is copied (never half-valid). */
  | 'STORE_COPY_SOURCE_INVALID'
  /** Items exist in the destination with different content: nothing is copied. */
  | 'STORE_COPY_CONFLICT'
  /** Bindings use the local key provider and the destination is shared (replicas cannot decrypt them). */
  | 'LOCAL_PROVIDER_REFUSED'
  /** Items too large for the destination (a DynamoDB item holds at most 400 KB): nothing is copied. */
  | 'STORE_COPY_TOO_LARGE'
  /** The destination failed part-way: `copied` lists what was written; a re-run completes the copy. */
  | 'STORE_COPY_INTERRUPTED';

/** Why one item cannot be copied. */
export type CopyConflictCode =
  /** The destination holds this binding with other content (another version, policy or ciphertext), or one failing validation. */
  | 'BINDING_DIFFERS'
  /** The destination already used this version (or a higher one) for this name: copying would repeat a version. */
  | 'VERSION_REUSED'
  /** The destination holds this baseline with other content (other PCRs or approvals). */
  | 'BASELINE_DIFFERS'
  /** The destination holds another (or an unreadable) revocation list. */
  | 'REVOCATIONS_DIFFER'
  /** The item is larger than the destination can hold. */
  | 'TOO_LARGE';

export interface CopyConflict {
  readonly code: CopyConflictCode;
  readonly kind: CopiedItem['kind'];
  readonly name: string;
  readonly message: string;
}

/** One item of a store, as reported (never a value or ciphertext). */
export type CopiedItem =
  | { readonly kind: 'binding'; readonly name: string; readonly version: number; readonly provider: Binding['provider'] }
  | { readonly kind: 'baseline'; readonly name: string; readonly approvals: number }
  | { readonly kind: 'revocations'; readonly name: 'revocations'; readonly pcr0: number; readonly instances: number; readonly baselines: number }
  | { readonly kind: 'reserved-version'; readonly name: string; readonly version: number };

export interface CopyReport {
  /** Written to the destination (with --dry-run: what would be). */
  readonly copied: readonly CopiedItem[];
  /** Already in the destination with the same content. */
  readonly unchanged: readonly CopiedItem[];
  readonly warnings: readonly string[];
  readonly dryRun: boolean;
}

export class StoreCopyError extends CodedError<StoreCopyErrorCode> {
  override readonly name = 'StoreCopyError';
  readonly conflicts: readonly CopyConflict[];
  /** What was written before the copy stopped part-way (a concurrent change of the destination, a backend failure); empty otherwise. */
  readonly copied: readonly CopiedItem[];
  constructor(code: StoreCopyErrorCode, message: string, options: { conflicts?: readonly CopyConflict[]; copied?: readonly CopiedItem[]; cause?: unknown } = {}) {
    super(code, message, { cause: options.cause });
    this.conflicts = options.conflicts ?? [];
    this.copied = options.copied ?? [];
  }
}

export interface CopyOptions {
  readonly dryRun?: boolean;
  /** The destination is shared by replicas (DynamoDB): local-provider bindings are refused unless `allowLocal`. */
  readonly destinationShared: boolean;
  /** Copy local-provider bindings anyway (brokers on a shared store deny them until re-bound with aws-kms). */
  readonly allowLocal?: boolean;
  /** Most items written per destination update (fewer when the destination's size limits need it). */
  readonly batchItems?: number;
}

/** The source, read once under its lock. */
interface SourceState {
  readonly snapshot: StoreSnapshot;
  readonly reserved: ReadonlyMap<string, number>;
}

/** One planned write. */
type Planned =
  | { readonly kind: 'binding'; readonly name: string; readonly binding: Binding }
  | { readonly kind: 'baseline'; readonly name: string; readonly baseline: Baseline }
  | { readonly kind: 'revocations'; readonly name: 'revocations'; readonly revocations: Revocations }
  | { readonly kind: 'reserved-version'; readonly name: string; readonly version: number };

function describe(item: Planned): CopiedItem {
  switch (item.kind) {
    case 'binding':
      return { kind: 'binding', name: item.name, version: item.binding.version, provider: item.binding.provider };
    case 'baseline':
      return { kind: 'baseline', name: item.name, approvals: item.baseline.approvals.length };
    case 'revocations':
      return { kind: 'revocations', name: 'revocations', pcr0: item.revocations.pcr0.length, instances: item.revocations.instances.length, baselines: item.revocations.baselines.length };
    case 'reserved-version':
      return { kind: 'reserved-version', name: item.name, version: item.version };
  }
}

const same = (a: unknown, b: unknown): boolean => canonicalJson(a) === canonicalJson(b);
const isEmpty = (r: Revocations): boolean => r.pcr0.length + r.instances.length + r.baselines.length === 0;

/**
 * Everything the source holds, in the order it is written: revocations first and bindings last, so that
 * if a copy is interrupted between two updates no binding is ever in the destination without the
 * revocations and baselines that govern it.
 */
function sourceItems(source: SourceState): Planned[] {
  const { snapshot, reserved } = source;
  const items: Planned[] = [];
  if (!isEmpty(snapshot.revocations)) items.push({ kind: 'revocations', name: 'revocations', revocations: snapshot.revocations });
  for (const name of [...snapshot.baselines.keys()].sort()) items.push({ kind: 'baseline', name, baseline: snapshot.baselines.get(name)! });
  for (const name of [...reserved.keys()].sort()) items.push({ kind: 'reserved-version', name, version: reserved.get(name)! });
  for (const name of [...snapshot.bindings.keys()].sort()) items.push({ kind: 'binding', name, binding: snapshot.bindings.get(name)! });
  return items;
}

/** What `item` comes to in the destination's current state: write it, nothing to do, or a conflict. */
function judge(item: Planned, dest: StoreSnapshot, destReserved: ReadonlyMap<string, number>): 'write' | 'unchanged' | CopyConflict {
  const conflict = (code: CopyConflictCode, message: string): CopyConflict => ({ code, kind: item.kind, name: item.name, message });
  switch (item.kind) {
    case 'revocations':
      if (dest.revocationsProblem) return conflict('REVOCATIONS_DIFFER', `the destination's revocation list fails validation (${dest.revocationsProblem.message})`);
      if (same(dest.revocations, item.revocations)) return 'unchanged';
      return isEmpty(dest.revocations) ? 'write' : conflict('REVOCATIONS_DIFFER', 'the destination holds another revocation list; merge them by hand (keygate revoke) and run the copy again');
    case 'baseline': {
      const existing = dest.baselines.get(item.name);
      if (!existing) return 'write';
      return same(existing, item.baseline) ? 'unchanged' : conflict('BASELINE_DIFFERS', `the destination holds baseline "${item.name}" with other content`);
    }
    case 'reserved-version': {
      const bound = dest.bindings.get(item.name)?.version ?? 0;
      return Math.max(bound, destReserved.get(item.name) ?? 0) >= item.version ? 'unchanged' : 'write';
    }
    case 'binding': {
      if (dest.invalidBindings.has(item.name)) return conflict('BINDING_DIFFERS', `the destination's binding of "${item.name}" fails validation`);
      const existing = dest.bindings.get(item.name);
      if (existing) {
        if (same(existing, item.binding)) return 'unchanged';
        return conflict('BINDING_DIFFERS', `the destination holds "${item.name}" version ${existing.version} with other content (source: version ${item.binding.version})`);
      }
      const reserved = destReserved.get(item.name) ?? 0;
      if (reserved >= item.binding.version) {
        return conflict('VERSION_REUSED', `the destination already used versions of "${item.name}" up to ${reserved} (source: version ${item.binding.version}); copying would repeat a version agents may have seen`);
      }
      return 'write';
    }
  }
}

async function write(tx: StoreWriter, item: Planned): Promise<void> {
  switch (item.kind) {
    case 'revocations':
      return tx.putRevocations(item.revocations);
    case 'baseline':
      return tx.putBaseline(item.baseline);
    case 'reserved-version':
      return tx.reserveVersion(item.name, item.version);
    case 'binding':
      return tx.putBinding(item.binding);
  }
}

/** Reads the source consistently (under its lock), refusing it whole if any entry fails validation. */
async function readSource(source: BindingStore): Promise<SourceState> {
  return source.update(async (snapshot, tx) => {
    const problems = source.problems();
    if (problems.length) {
      throw new StoreCopyError('STORE_COPY_SOURCE_INVALID', `the source store has entries failing validation; nothing was copied (fix them first):\n  ${problems.map((p) => `${p.file}: ${p.message}`).join('\n  ')}`);
    }
    // A damaged reservation record throws here, naming its file: copying around it could repeat versions.
    return { snapshot, reserved: await tx.reservedVersions() };
  });
}

/**
 * Splits `pending` (in order) into batches of at most `maxItems` that the destination takes in one update
 * each. An item too large on its own refuses the whole copy (STORE_COPY_TOO_LARGE, every such item named)
 * before anything is written.
 */
function batchesThatFit(dest: BindingStore, pending: readonly Planned[], maxItems: number): Planned[][] {
  const refusal = (err: unknown): string | undefined => {
    if (err instanceof CodedError && err.code === 'STORE_TOO_LARGE') return err.message;
    throw err;
  };
  const fits = (items: readonly Planned[]): string | undefined => {
    try {
      dest.checkUpdate(items);
      return undefined;
    } catch (err) {
      return refusal(err);
    }
  };
  const tooLarge = pending.flatMap((item): CopyConflict[] => {
    const why = fits([item]);
    return why === undefined ? [] : [{ code: 'TOO_LARGE', kind: item.kind, name: item.name, message: why }];
  });
  if (tooLarge.length) {
    throw new StoreCopyError('STORE_COPY_TOO_LARGE', `${tooLarge.length} item(s) are too large for the destination; nothing was copied:\n  ${tooLarge.map((c) => `${c.kind} ${c.name}: ${c.message}`).join('\n  ')}`, { conflicts: tooLarge });
  }
  const batches: Planned[][] = [];
  let current: Planned[] = [];
  for (const item of pending) {
    if (current.length > 0 && (current.length >= maxItems || fits([...current, item]) !== undefined)) {
      batches.push(current);
      current = [];
    }
    current.push(item);
  }
  if (current.length) batches.push(current);
  return batches;
}

/** Copies `source` into `dest` (see the module comment). Throws StoreCopyError when it refuses. */
export async function copyStore(source: BindingStore, dest: BindingStore, options: CopyOptions): Promise<CopyReport> {
  const state = await readSource(source).catch((err: unknown) => {
    if (err instanceof StoreCopyError) throw err;
    // A validation error thrown while reading (a damaged reservation record) names the file.
    throw new StoreCopyError('STORE_COPY_SOURCE_INVALID', `the source store cannot be read whole; nothing was copied: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  });
  const warnings: string[] = [];
  const local = [...state.snapshot.bindings.values()].filter((b) => b.provider === 'local').map((b) => b.secret).sort();
  if (local.length && options.destinationShared) {
    const why = `binding(s) ${local.join(', ')} use the local key provider: its key file is per machine, so replicas cannot decrypt them (brokers on a shared store deny them)`;
    if (!options.allowLocal) throw new StoreCopyError('LOCAL_PROVIDER_REFUSED', `${why}; nothing was copied. Re-bind them with --provider aws-kms first, or pass --allow-local to copy them as they are (then re-bind each with --provider aws-kms in the destination)`);
    warnings.push(`${why}; re-bind each with --provider aws-kms in the destination (its version continues above the copied one)`);
  }
  const items = sourceItems(state);

  // Plan against the destination as it is now; any conflict stops the copy before a single write.
  const plan = await dest.update(async (current, tx) => {
    const reserved = await tx.reservedVersions();
    return items.map((item) => ({ item, verdict: judge(item, current, reserved) }));
  });
  const conflicts = plan.flatMap((p) => (typeof p.verdict === 'object' ? [p.verdict] : []));
  if (conflicts.length) {
    throw new StoreCopyError('STORE_COPY_CONFLICT', `${conflicts.length} item(s) exist in the destination with different content; nothing was copied:\n  ${conflicts.map((c) => `${c.code} ${c.kind} ${c.name}: ${c.message}`).join('\n  ')}`, { conflicts });
  }
  const unchanged = plan.filter((p) => p.verdict === 'unchanged').map((p) => describe(p.item));
  const pending = plan.filter((p) => p.verdict === 'write').map((p) => p.item);
  const batches = batchesThatFit(dest, pending, options.batchItems ?? 25);
  if (options.dryRun) return { copied: pending.map(describe), unchanged, warnings, dryRun: true };

  // Written in batches (one destination update each, in the order above). Each batch judges its items again
  // on the state its update starts from: a change made meanwhile by another admin is never overwritten.
  const copied: CopiedItem[] = [];
  for (const batch of batches) {
    const written = await dest.update(async (current, tx) => {
      const reserved = await tx.reservedVersions();
      const done: CopiedItem[] = [];
      const late: CopyConflict[] = [];
      for (const item of batch) {
        const verdict = judge(item, current, reserved);
        if (typeof verdict === 'object') late.push(verdict);
        else if (verdict === 'write') {
          await write(tx, item);
          done.push(describe(item));
        }
      }
      // Thrown inside the update: none of this batch is written.
      if (late.length) throw new StoreCopyError('STORE_COPY_CONFLICT', `the destination changed during the copy: ${late.map((c) => `${c.code} ${c.kind} ${c.name}: ${c.message}`).join('; ')}`, { conflicts: late });
      return done;
    }).catch((err: unknown) => {
      if (err instanceof StoreCopyError) throw new StoreCopyError(err.code, `${err.message}; copied before it: ${copied.length} item(s) (run the copy again once resolved)`, { conflicts: err.conflicts, copied });
      // Whatever else fails here (the destination unreachable, a deadline passed) leaves the earlier batches
      // written: say what they were. The failing batch itself may or may not have been committed.
      const why = err instanceof CodedError ? `${String(err.code)}: ${err.message}` : err instanceof Error ? err.message : String(err);
      throw new StoreCopyError(
        'STORE_COPY_INTERRUPTED',
        `the destination failed during the copy (${why}); ${copied.length} item(s) were written before it (listed), the ${batch.length} item(s) being written may or may not have been; run the copy again: it skips what is there and completes the copy`,
        { copied, cause: err },
      );
    });
    copied.push(...written);
  }
  return { copied, unchanged, warnings, dryRun: false };
}
