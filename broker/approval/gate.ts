import { randomBytes } from 'node:crypto';
import type { ApprovalPolicy, Binding, Revocations } from '../policy/types.js';
import type { PendingApproval } from '../protocol/index.js';
import { checkRevoked, instanceIdOf, type EnclaveIdentity } from '../policy/decide.js';
import type { ApprovalStore } from './approval-store.js';
import { ApprovalError, approvalStatus, bindingChangedSince, parseApprovalRequest, sameIdentity, validGrants, type ApprovalIdentity, type ApprovalRequest, type ApprovalStatus } from './request.js';

/** One approval event for the audit (written by the release pipeline's #record, before the answer). */
export interface ApprovalEvent {
  readonly event: 'pending' | 'granted' | 'denied' | 'expired' | 'released';
  readonly id: string;
  readonly secret: string;
  readonly version: number;
  /** Approver key thumbprints the event concerns: the granter, the denier, or everyone whose grant counted. */
  readonly approvers: readonly string[];
  readonly expiresAt: string;
  /** For `granted`: when the store accepted the grant. */
  readonly at?: string;
}

/** What the approval gate says about a request whose names are all allowed by policy. */
export type GateOutcome =
  /** No requested binding needs approval. */
  | { readonly kind: 'none' }
  /** At least one name awaits approval: 202 with these requests, nothing released. */
  | { readonly kind: 'pending'; readonly pending: readonly PendingApproval[]; readonly events: readonly ApprovalEvent[] }
  /** A request was denied (or its window passed): nothing released; the next request starts a new one. */
  | { readonly kind: 'refused'; readonly code: 'APPROVAL_DENIED' | 'APPROVAL_EXPIRED'; readonly message: string; readonly events: readonly ApprovalEvent[] }
  /**
   * Every name that needs approval has k valid grants inside its window. `consume` marks those requests
   * used (single use, conditional writes) just before the release is recorded; false: a concurrent request
   * used one first, and nothing may be released.
   */
  | { readonly kind: 'approved'; readonly approved: readonly ApprovalRequest[]; consume(now: number): Promise<{ readonly used: boolean; readonly events: readonly ApprovalEvent[] }> };

/** How long a finished request is kept past its expiry before the sweep deletes it (the audit keeps its story). */
export const APPROVAL_RETENTION_MS = 7 * 86_400_000;
/**
 * A finished request nobody granted or denied is kept only this long past its expiry: long enough for its
 * enclave's next request to be told it expired, short enough that enclaves asking and never being answered
 * (or asking once and vanishing) cannot pile up records that every release request then reads.
 */
export const UNGRANTED_RETENTION_MS = 3_600_000;

/** Rounds a conditional write is retried on a fresh copy when another writer changed the request meanwhile. */
const MAX_ROUNDS = 8;

/** Open requests one enclave may hold per secret is one; this bounds what a flood of distinct enclaves can create. */
export const MAX_OPEN_APPROVALS = 1000;
/**
 * Open requests the enclaves of one parent instance may hold at once. A parent can launch enclaves (each a
 * new module id, each allowed one open request per secret) as fast as it likes: this keeps one instance
 * from filling the store and the global bound for everyone else.
 */
export const MAX_OPEN_APPROVALS_PER_INSTANCE = 64;

/** The approval identity of an attested enclave. */
export function approvalIdentityOf(identity: EnclaveIdentity): ApprovalIdentity {
  return {
    moduleId: identity.moduleId,
    pcr0: identity.pcrs[0] ?? '',
    pcr1: identity.pcrs[1] ?? '',
    pcr2: identity.pcrs[2] ?? '',
    instance: instanceIdOf(identity.moduleId) ?? null,
  };
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** The request's enclave is revoked (its PCR0 or its instance), as a release would find it. */
function identityRevoked(identity: ApprovalIdentity, revocations: Revocations): boolean {
  return checkRevoked({ moduleId: identity.moduleId, pcrs: { 0: identity.pcr0, 1: identity.pcr1, 2: identity.pcr2 }, debug: false }, revocations) !== undefined;
}

/**
 * Human approval in the release path (design.md 5b): pending -> granted (k of n) -> released once, or
 * denied / expired. The broker alone moves a request to a terminal state, always by a conditional write,
 * and only the writer that wins reports the events, so each is audited once.
 */
export class ApprovalGate {
  readonly #store: ApprovalStore;

  constructor(store: ApprovalStore) {
    this.#store = store;
  }

  /**
   * Judges the approval-requiring names of an allowed request for `identity`. Creates a pending request
   * for each such name that has no open one (this is the only write besides closing ended ones).
   *
   * @throws ApprovalError APPROVAL_STORE_UNAVAILABLE / APPROVAL_STORE_INVALID (fail closed: nothing released)
   */
  async evaluate(bindings: readonly Binding[], enclave: EnclaveIdentity, now: number): Promise<GateOutcome> {
    const needing = bindings.filter((b) => b.approval !== undefined);
    if (!needing.length) return { kind: 'none' };
    const identity = approvalIdentityOf(enclave);
    const all = await this.#store.list();
    const events: ApprovalEvent[] = [];
    const open = new Map<string, { request: ApprovalRequest; status: ApprovalStatus }>();
    let refused: { code: 'APPROVAL_DENIED' | 'APPROVAL_EXPIRED'; secret: string } | undefined;
    for (const binding of needing) {
      const mine = all.filter((r) => r.secret === binding.secret && sameIdentity(r.identity, identity));
      // Ended by the sweep while nobody asked: this enclave's next request is told once (then a new one starts).
      const swept = mine.find((r) => (r.state === 'denied' || r.state === 'expired') && r.notified === false);
      if (swept) {
        if (await this.#store.replace({ ...swept, notified: true, rev: swept.rev + 1 })) {
          if (swept.state === 'denied' || !refused) refused = { code: swept.state === 'denied' ? 'APPROVAL_DENIED' : 'APPROVAL_EXPIRED', secret: binding.secret };
          continue;
        }
      }
      // Concurrent first requests may have opened several: the one furthest along counts (the rest expire unnoticed).
      const judged = mine
        .filter((r) => r.state === 'pending')
        .map((request) => ({ request, status: bindingChangedSince(request, binding) ? ({ kind: 'expired', granted: [] } as ApprovalStatus) : approvalStatus(request, binding.approval!, now) }));
      const rank = (s: ApprovalStatus): number => (s.kind === 'approved' ? 1000 : s.kind === 'pending' ? 100 + s.granted.length : 0);
      const best = judged.sort((a, b) => rank(a.status) - rank(b.status)).at(-1);
      if (!best) continue;
      // Approval is for a version: a rotation or re-bind since voids the request (closed as expired; a new one starts).
      const { request, status } = best;
      if (status.kind === 'denied' || status.kind === 'expired') {
        const closed = await this.#close(request, status, now, request.version === binding.version ? binding.approval : undefined);
        if (closed) events.push(...closed);
        else await this.#markNotified(request.id); // the sweep closed it meanwhile: this answer is the enclave's one notice
        if (status.kind === 'denied' || !refused) refused = { code: status.kind === 'denied' ? 'APPROVAL_DENIED' : 'APPROVAL_EXPIRED', secret: binding.secret };
        continue;
      }
      open.set(binding.secret, { request, status });
    }
    if (refused) {
      return {
        kind: 'refused',
        code: refused.code,
        message: refused.code === 'APPROVAL_DENIED' ? `the approval request for "${refused.secret}" was denied; nothing was released` : `the approval request for "${refused.secret}" expired; nothing was released`,
        events,
      };
    }
    const pending: PendingApproval[] = [];
    let created = 0;
    for (const binding of needing) {
      const found = open.get(binding.secret);
      if (found?.status.kind === 'approved') continue;
      let request = found?.request;
      if (!request) {
        if (all.filter((r) => r.state === 'pending').length + pending.length >= MAX_OPEN_APPROVALS) {
          throw new ApprovalError('APPROVAL_STORE_UNAVAILABLE', `${MAX_OPEN_APPROVALS} approval requests are open; no more are created until some end`);
        }
        // Enclaves without an instance in their module id share one bound.
        const ofInstance = all.filter((r) => r.state === 'pending' && now < Date.parse(r.expiresAt) && r.identity.instance === identity.instance).length;
        if (ofInstance + created >= MAX_OPEN_APPROVALS_PER_INSTANCE) {
          throw new ApprovalError('APPROVAL_LIMIT', `the enclaves of instance ${identity.instance ?? '(none)'} hold ${MAX_OPEN_APPROVALS_PER_INSTANCE} open approval requests; no more are created until some end`);
        }
        request = {
          id: `apr_${randomBytes(16).toString('hex')}`,
          secret: binding.secret,
          version: binding.version,
          identity,
          createdAt: iso(now),
          expiresAt: iso(now + binding.approval!.windowSeconds * 1000),
          grants: [],
          state: 'pending',
          rev: 1,
        };
        // A request the store would not read back (an identity out of format) would be created again on every ask: refused.
        parseApprovalRequest(request);
        if (!(await this.#store.create(request))) throw new ApprovalError('APPROVAL_STORE_INVALID', 'an approval request id collided; retry');
        created++;
        events.push({ event: 'pending', id: request.id, secret: request.secret, version: request.version, approvers: binding.approval!.approvers.map((a) => a.kid), expiresAt: request.expiresAt });
      }
      pending.push({ id: request.id, secret: request.secret, version: request.version, expiresAt: request.expiresAt });
    }
    if (pending.length) return { kind: 'pending', pending, events };
    const approved = needing.map((b) => ({ ...open.get(b.secret)!, policy: b.approval! }));
    return {
      kind: 'approved',
      approved: approved.map((a) => a.request),
      consume: async (at) => {
        const used: ApprovalEvent[] = [];
        for (const { request, policy } of approved) {
          // Single use across replicas: only the request that wins this conditional write releases. A write lost
          // to another change (a grant, the sweep's audit mark) is retried on the fresh copy while it is still
          // approved and open; one lost to a release or an end is final.
          let current: ApprovalRequest | undefined = request;
          let done = false;
          for (let round = 0; round < MAX_ROUNDS && current && !done; round++) {
            const status = approvalStatus(current, policy, at);
            if (current.state !== 'pending' || status.kind !== 'approved') break;
            if (await this.#store.replace({ ...current, state: 'released', closedAt: iso(at), rev: current.rev + 1 })) {
              used.push(...grantEvents(current, status.granted), { event: 'released', id: current.id, secret: current.secret, version: current.version, approvers: status.granted, expiresAt: current.expiresAt });
              done = true;
            } else current = await this.#store.get(request.id);
          }
          if (!done) return { used: false, events: used };
        }
        return { used: true, events: used };
      },
    };
  }

  /**
   * Closes every open request that has ended without the enclave asking again (denied, past its window, or
   * its binding changed, or its enclave's PCR0 or instance is in `revocations`), so each denial and expiry is
   * audited even when nobody asks; returns the events this call's writes won, each with the request's enclave
   * identity. A revocation leaves no mark on the binding: closing here is what keeps an unrevoke from bringing
   * back approvals granted before it (a revoke and unrevoke between two sweeps is not seen).
   *
   * @throws ApprovalError when the approval store cannot be read
   */
  async sweep(bindings: ReadonlyMap<string, Binding>, now: number, revocations?: Revocations): Promise<{ readonly events: Array<ApprovalEvent & { readonly identity: ApprovalIdentity }>; acknowledge(): Promise<void> }> {
    const out: Array<ApprovalEvent & { readonly identity: ApprovalIdentity }> = [];
    const newGrants = new Map<string, string[]>();
    const list = await this.#store.list();
    for (const request of list) {
      // Finished requests are kept (approvals list --all) for APPROVAL_RETENTION_MS past their expiry (ungranted ones for
      // UNGRANTED_RETENTION_MS), then deleted, told to their enclave or not: one that never asks again must not keep them forever.
      const retention = request.grants.length || request.denial ? APPROVAL_RETENTION_MS : UNGRANTED_RETENTION_MS;
      if (request.state !== 'pending' && Date.parse(request.expiresAt) + retention < now) await this.#store.remove(request.id);
      if (request.state !== 'pending') continue;
      const policy = bindings.get(request.secret)?.approval;
      const binding = bindings.get(request.secret);
      const status: ApprovalStatus = !policy || bindingChangedSince(request, binding) || (revocations && identityRevoked(request.identity, revocations)) ? { kind: 'expired', granted: [] } : approvalStatus(request, policy, now);
      if (status.kind === 'denied' || status.kind === 'expired') {
        // An expired request is told to the enclave's next request, unless another of the same enclave and secret, open
        // or released, was opened as late or later (concurrent first requests): that one superseded it.
        const superseded = status.kind === 'expired' && list.some((o) => o.id !== request.id && (o.state === 'pending' || o.state === 'released') && o.secret === request.secret && sameIdentity(o.identity, request.identity) && o.createdAt >= request.createdAt);
        for (const event of (await this.#close(request, status, now, binding?.version === request.version ? policy : undefined, superseded)) ?? []) out.push({ ...event, identity: request.identity });
        continue;
      }
      // Still open: grants not audited yet are audited now (then marked), not only when the request ends.
      const events = status.kind === 'released' ? [] : grantEvents(request, status.granted);
      if (!events.length) continue;
      out.push(...events.map((e) => ({ ...e, identity: request.identity })));
      newGrants.set(request.id, events.flatMap((e) => e.approvers));
    }
    return {
      events: out,
      // After the records are durable: a crash before this audits those grants again (at least once, never lost).
      acknowledge: async () => {
        for (const [id, kids] of newGrants) await this.#markAudited(id, kids);
      },
    };
  }

  /** Adds `kids` to a still-open request's audited grants (conditional, retried on a race). */
  async #markAudited(id: string, kids: readonly string[]): Promise<void> {
    for (let round = 0; round < 8; round++) {
      const fresh = await this.#store.get(id);
      if (!fresh || fresh.state !== 'pending') return;
      const audited = [...new Set([...(fresh.audited ?? []), ...kids])];
      if (audited.length === (fresh.audited ?? []).length) return;
      if (await this.#store.replace({ ...fresh, audited, rev: fresh.rev + 1 })) return;
    }
  }

  /** Records that the enclave was told how a swept request ended (so it is told once). */
  async #markNotified(id: string): Promise<void> {
    const fresh = await this.#store.get(id);
    if (fresh && fresh.notified === false) await this.#store.replace({ ...fresh, notified: true, rev: fresh.rev + 1 });
  }

  /** Marks a denied or expired request closed; the events when this call's write won (else another broker reports them). */
  async #close(request: ApprovalRequest, status: Extract<ApprovalStatus, { kind: 'denied' | 'expired' }>, now: number, policy: ApprovalPolicy | undefined, notified = true): Promise<ApprovalEvent[] | undefined> {
    // A denial or an expiry cannot be undone: a write lost to another change (a grant, an audit mark) is
    // retried on the fresh copy while it is open; one lost to another broker's close is that broker's to report.
    let current: ApprovalRequest | undefined = request;
    for (let round = 0; round < MAX_ROUNDS && current?.state === 'pending'; round++) {
      if (await this.#store.replace({ ...current, state: status.kind, closedAt: iso(now), notified, rev: current.rev + 1 })) {
        const base = { id: current.id, secret: current.secret, version: current.version, expiresAt: current.expiresAt };
        // Grants as stored now (one may have arrived since the read); without the policy (binding changed) by stored kid.
        const granted = policy ? validGrants(current, policy) : [...new Set(current.grants.map((g) => g.kid))];
        return [...grantEvents(current, granted), { ...base, event: status.kind, approvers: status.kind === 'denied' && status.by ? [status.by] : [] }];
      }
      current = await this.#store.get(request.id);
    }
    return undefined;
  }
}

/** One `granted` event per counted grant not audited yet (by the sweep while open, else when the request ends). */
function grantEvents(request: ApprovalRequest, granted: readonly string[]): ApprovalEvent[] {
  return granted.filter((kid) => !(request.audited ?? []).includes(kid)).map((kid) => ({
    event: 'granted' as const,
    id: request.id,
    secret: request.secret,
    version: request.version,
    approvers: [kid],
    expiresAt: request.expiresAt,
    ...(request.grants.find((g) => g.kid === kid)?.at ? { at: request.grants.find((g) => g.kid === kid)!.at } : {}),
  }));
}
