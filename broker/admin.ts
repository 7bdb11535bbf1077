import { CodedError } from '../lib/coded-error.js';
import type { BindingStore, StoreSnapshot } from './store/store.js';
import type { KeyProvider } from './kms/provider.js';
import { parseBinding, parsePcrValues, SECRET_NAME } from './policy/schema.js';
import type { AllowRule, ApprovalPolicy, Binding, BindablePcrs, Ec2TagRule, InjectRule, ProviderName, ReleaseMode, Revocations } from './policy/types.js';
import { samePcrs, type PcrValues } from '../lib/pcrs.js';
import type { Baseline } from './policy/baseline.js';
import { mergeBaseline } from './ops/stored-baselines.js';

/** Store operations behind `keygate bind/rotate/unbind/revoke/list`, shared by the CLI and tests. */

/** Largest secret value keygate stores. */
export const MAX_SECRET_BYTES = 64 * 1024;

export class AdminError extends CodedError<'ADMIN_REFUSED'> {
  override readonly name = 'AdminError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ADMIN_REFUSED', message, options);
  }
}

export interface BindRequest {
  readonly secret: string;
  readonly value: Uint8Array;
  readonly allow: readonly AllowRule[];
  readonly provider: ProviderName;
  readonly kmsKeyId?: string;
  /**
   * `kms-recipient` (aws-kms only): KMS encrypts the value to the enclave, the broker never sees it.
   * Unset: the existing binding's mode while it stays on aws-kms (a re-bind that forgets the flag must
   * not quietly make the broker a plaintext holder again), else jwe.
   */
  readonly mode?: ReleaseMode;
  readonly ttlSeconds?: number;
  readonly allowDebug?: boolean;
  readonly instances?: readonly string[];
  /** Restrict to instances carrying this EC2 tag (instead of listed ids). */
  readonly instanceTag?: Ec2TagRule;
  /** Add the measurement sets to an existing binding instead of replacing them (rolling deploys). */
  readonly addAllow?: boolean;
  /** Baselines the rules reference, copied into the store (with their approvals) for brokers to check. */
  readonly baselines?: readonly Baseline[];
  /** Credential substitution: never released, only added by the broker's gateway to calls to an upstream. */
  readonly inject?: InjectRule;
  /**
   * Human approval of each release (k of n approver keys, window). Unset: the existing binding's, so a
   * re-bind that forgets the flag never silently drops the approval requirement (unbind first to drop it).
   */
  readonly approval?: ApprovalPolicy;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function isText(value: Uint8Array): boolean {
  try {
    utf8.decode(value);
    return true;
  } catch {
    return false;
  }
}

/** A broken binding file is not silently replaced from a blank slate (its version history would restart). */
function assertLoadable(current: StoreSnapshot, secret: string): void {
  if (current.invalidBindings.has(secret)) {
    throw new AdminError(`the binding file of "${secret}" fails validation (see keygate list): fix or restore it, or unbind it first`);
  }
}

function sameRule(a: AllowRule, b: AllowRule): boolean {
  return samePcrs(a.pcrs, b.pcrs);
}

/** Validates one PCR set given on the command line. */
export function pcrSet(values: PcrValues, baseline?: string): AllowRule {
  const pcrs = Object.fromEntries(Object.entries(values).flatMap(([k, v]) => (v === undefined ? [] : [[k, v.toLowerCase().replace(/^0x/, '')]])));
  const parsed: BindablePcrs = parsePcrValues(pcrs, 'pcrs');
  return baseline ? { pcrs: parsed, baseline } : { pcrs: parsed };
}

/** Encrypts `value` with the chosen provider and writes the binding (the next version this name never had). */
export async function bindSecret(store: BindingStore, provider: KeyProvider, req: BindRequest, now = new Date()): Promise<Binding> {
  if (!SECRET_NAME.test(req.secret)) throw new AdminError(`"${req.secret}" is not a valid secret name ([A-Za-z0-9._-], up to 128)`);
  if (req.value.length === 0) throw new AdminError('the secret value is empty');
  if (req.value.length > MAX_SECRET_BYTES) throw new AdminError(`the secret value is larger than ${MAX_SECRET_BYTES / 1024} KiB`);
  if (req.provider === 'aws-kms' && !req.kmsKeyId) throw new AdminError('--kms-key-id is required with --provider aws-kms');
  if (req.instanceTag && req.instances?.length) throw new AdminError('restrict instances by id or by EC2 tag, not both');
  const ciphertext = await provider.encrypt(req.value, req.secret, req.kmsKeyId);
  return store.update(async (current, tx) => {
    assertLoadable(current, req.secret);
    const previous = current.bindings.get(req.secret);
    // kms-recipient promises the broker never holds the value: a re-bind that does not name the mode must not
    // quietly move the secret to a provider the broker decrypts with (found in review: the admin API's and
    // the CLI's default provider is local). Unbind first to change that on purpose.
    if (previous?.mode === 'kms-recipient' && req.mode === undefined && req.provider !== 'aws-kms') {
      throw new AdminError(`"${req.secret}" is bound in kms-recipient mode (the broker never holds its value); re-binding it to the ${req.provider} provider would end that: bind with --provider aws-kms, or unbind it first`);
    }
    // Same for inject: a re-bind that forgets --inject would make a credential that is never to leave the broker releasable.
    if (previous?.inject && !req.inject) {
      throw new AdminError(`"${req.secret}" is an inject binding (never released, only added by the gateway); re-binding it without --inject would make it releasable: bind with --inject, or unbind it first`);
    }
    const allow = req.addAllow && previous ? [...previous.allow, ...req.allow.filter((r) => !previous.allow.some((p) => sameRule(p, r)))] : req.allow;
    const binding = parseBinding({
      secret: req.secret,
      version: await tx.nextVersion(req.secret),
      provider: req.provider,
      ...(req.kmsKeyId ? { kmsKeyId: req.kmsKeyId } : {}),
      ...((req.mode ?? (req.provider === 'aws-kms' ? previous?.mode : undefined)) === 'kms-recipient' ? { mode: 'kms-recipient' } : {}),
      ciphertext,
      text: isText(req.value),
      allow,
      ...(req.instanceTag ? { instances: { ec2Tag: { ...req.instanceTag } } } : req.instances?.length ? { instances: { ids: [...req.instances] } } : previous?.instances ? { instances: previous.instances } : {}),
      allowDebug: req.allowDebug ?? false,
      ttlSeconds: req.ttlSeconds ?? previous?.ttlSeconds ?? 60,
      ...(req.inject ? { inject: req.inject } : {}),
      revoked: false,
      ...((req.approval ?? previous?.approval) ? { approval: req.approval ?? previous?.approval } : {}),
      createdAt: previous?.createdAt ?? now.toISOString(),
      updatedAt: now.toISOString(),
    });
    // Merged, not overwritten: approvals the store already holds (keygate approve) are kept; another build under the name is refused.
    for (const baseline of req.baselines ?? []) await tx.putBaseline(mergeBaseline(current.baselines.get(baseline.name), baseline));
    await tx.putBinding(binding);
    return binding;
  });
}

/** What differs between two states of a binding besides its value (version, ciphertext, text, updatedAt); undefined if nothing. */
function policyChange(before: Binding, now: Binding): string | undefined {
  const { version: _v1, ciphertext: _c1, text: _t1, updatedAt: _u1, ...a } = before;
  const { version: _v2, ciphertext: _c2, text: _t2, updatedAt: _u2, ...b } = now;
  const fields = [...new Set([...Object.keys(a), ...Object.keys(b)])].filter(
    (k) => JSON.stringify((a as Record<string, unknown>)[k]) !== JSON.stringify((b as Record<string, unknown>)[k]),
  );
  return fields.length ? `${fields.sort().join(', ')} changed` : undefined;
}

/** Replaces the value of an existing binding (version + 1); policy is unchanged. */
export async function rotateSecret(store: BindingStore, providers: ReadonlyMap<ProviderName, KeyProvider>, secret: string, value: Uint8Array, now = new Date()): Promise<Binding> {
  if (value.length === 0) throw new AdminError('the secret value is empty');
  const fresh = await store.refresh();
  assertLoadable(fresh, secret);
  const existing = fresh.bindings.get(secret);
  if (!existing) throw new AdminError(`no binding for "${secret}"`);
  const provider = providers.get(existing.provider);
  if (!provider) throw new AdminError(`the ${existing.provider} provider is not configured`);
  const ciphertext = await provider.encrypt(value, secret, existing.kmsKeyId);
  return store.update(async (current, tx) => {
    assertLoadable(current, secret);
    const previous = current.bindings.get(secret);
    if (!previous) throw new AdminError(`no binding for "${secret}"`);
    // The value was encrypted (outside the lock) for the binding as read then. If another admin changed what
    // the binding governs meanwhile (revoked it, re-bound it for other enclaves, moved it to another provider
    // or key), landing on top would undo their change or put this value under a policy this admin never saw:
    // refuse. Only the value may have moved on (a concurrent rotation, or a re-bind keeping the policy): the
    // ciphertext is bound to the name, not the version, so this rotation lands after it (version + 1 again).
    const changed = policyChange(existing, previous);
    if (changed) {
      throw new AdminError(`the binding of "${secret}" changed while the new value was being encrypted (${changed}; now version ${previous.version}); nothing was written: check it and run the rotation again`);
    }
    const binding = parseBinding({ ...previous, version: previous.version + 1, ciphertext, text: isText(value), revoked: false, updatedAt: now.toISOString() });
    await tx.putBinding(binding);
    return binding;
  });
}

export async function unbindSecret(store: BindingStore, secret: string): Promise<void> {
  await store.update(async (_current, tx) => {
    if (!(await tx.deleteBinding(secret))) throw new AdminError(`no binding for "${secret}"`);
  });
}

/** Marks a secret revoked: released to nobody until rotated or re-bound. */
export async function revokeSecret(store: BindingStore, secret: string, now = new Date()): Promise<Binding> {
  return store.update(async (current, tx) => {
    assertLoadable(current, secret);
    const previous = current.bindings.get(secret);
    if (!previous) throw new AdminError(`no binding for "${secret}"`);
    const binding = parseBinding({ ...previous, revoked: true, updatedAt: now.toISOString() });
    await tx.putBinding(binding);
    return binding;
  });
}

/** Adds identity-wide revocations (PCR0 values, instances, baselines). */
export async function revokeIdentities(store: BindingStore, add: Partial<Revocations>): Promise<Revocations> {
  return store.update(async (current, tx) => {
    // Writing a fresh list over a broken one would silently drop the revocations it holds.
    if (current.revocationsProblem) throw new AdminError(`revocations.json fails validation (${current.revocationsProblem.message}): fix or restore it first`);
    const r = current.revocations;
    const merge = (a: readonly string[], b: readonly string[] = []): string[] => [...new Set([...a, ...b.map((x) => x.toLowerCase())])];
    const next: Revocations = {
      pcr0: merge(r.pcr0, add.pcr0),
      instances: merge(r.instances, add.instances),
      baselines: [...new Set([...r.baselines, ...(add.baselines ?? [])])],
    };
    await tx.putRevocations(next);
    return next;
  });
}
