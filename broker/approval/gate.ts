import { randomBytes } from 'node:crypto';
import type { Binding } from '../policy/types.js';
import type { PendingApproval } from '../protocol/index.js';
import { instanceIdOf, type EnclaveIdentity } from '../policy/decide.js';
import type { ApprovalStore } from './approval-store.js';
import { ApprovalError, approvalStatus, sameIdentity, type ApprovalIdentity, type ApprovalRequest, type ApprovalStatus } from './request.js';

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

/** Open requests one enclave may hold per secret is one; this bounds what a flood of distinct enclaves can create. */
export const MAX_OPEN_APPROVALS = 1000;

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
      if (swept && (swept.state === 'denied' || swept.state === 'expired') && swept.notified === false) {
        if (await this.#store.replace({ ...swept, notified: true, rev: swept.rev + 1 })) {
          if (swept.state === 'denied' || !refused) refused = { code: swept.state === 'denied' ? 'APPROVAL_DENIED' : 'APPROVAL_EXPIRED', secret: binding.secret };
          continue;
        }
      }
      const request = mine.filter((r) => r.state === 'pending').at(-1);
      if (!request) continue;
      // Approval is for a version: a rotation or re-bind since voids the request (closed as expired; a new one starts).
      const status: ApprovalStatus = request.version !== binding.version ? { kind: 'expired', granted: [] } : approvalStatus(request, binding.approval!, now);
      if (status.kind === 'denied' || status.kind === 'expired') {
        const closed = await this.#close(request, status, now);
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
    for (const binding of needing) {
      const found = open.get(binding.secret);
      if (found?.status.kind === 'approved') continue;
      let request = found?.request;
      if (!request) {
        if (all.filter((r) => r.state === 'pending').length + pending.length >= MAX_OPEN_APPROVALS) {
          throw new ApprovalError('APPROVAL_STORE_UNAVAILABLE', `${MAX_OPEN_APPROVALS} approval requests are open; no more are created until some end`);
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
        if (!(await this.#store.create(request))) throw new ApprovalError('APPROVAL_STORE_INVALID', 'an approval request id collided; retry');
        events.push({ event: 'pending', id: request.id, secret: request.secret, version: request.version, approvers: binding.approval!.approvers.map((a) => a.kid), expiresAt: request.expiresAt });
      }
      pending.push({ id: request.id, secret: request.secret, version: request.version, expiresAt: request.expiresAt });
    }
    if (pending.length) return { kind: 'pending', pending, events };
    const approved = needing.map((b) => open.get(b.secret)!);
    return {
      kind: 'approved',
      approved: approved.map((a) => a.request),
      consume: async (at) => {
        const used: ApprovalEvent[] = [];
        for (const { request, status } of approved) {
          const granted = status.kind === 'approved' ? status.granted : [];
          const next: ApprovalRequest = { ...request, state: 'released', closedAt: iso(at), rev: request.rev + 1 };
          // Single use across replicas: only the request that wins this conditional write releases.
          if (!(await this.#store.replace(next))) return { used: false, events: used };
          used.push(...grantEvents(request, granted), { event: 'released', id: request.id, secret: request.secret, version: request.version, approvers: granted, expiresAt: request.expiresAt });
        }
        return { used: true, events: used };
      },
    };
  }

  /**
   * Closes every open request that has ended without the enclave asking again (denied, past its window, or
   * its binding changed), so each denial and expiry is audited even when nobody asks; returns the events
   * this call's writes won, each with the request's enclave identity.
   *
   * @throws ApprovalError when the approval store cannot be read
   */
  async sweep(bindings: ReadonlyMap<string, Binding>, now: number): Promise<Array<ApprovalEvent & { readonly identity: ApprovalIdentity }>> {
    const out: Array<ApprovalEvent & { readonly identity: ApprovalIdentity }> = [];
    for (const request of await this.#store.list()) {
      if (request.state !== 'pending') continue;
      const policy = bindings.get(request.secret)?.approval;
      const binding = bindings.get(request.secret);
      const status: ApprovalStatus = !policy || binding?.version !== request.version ? { kind: 'expired', granted: [] } : approvalStatus(request, policy, now);
      if (status.kind !== 'denied' && status.kind !== 'expired') continue;
      for (const event of (await this.#close(request, status, now, false)) ?? []) out.push({ ...event, identity: request.identity });
    }
    return out;
  }

  /** Records that the enclave was told how a swept request ended (so it is told once). */
  async #markNotified(id: string): Promise<void> {
    const fresh = await this.#store.get(id);
    if (fresh && fresh.notified === false) await this.#store.replace({ ...fresh, notified: true, rev: fresh.rev + 1 });
  }

  /** Marks a denied or expired request closed; the events when this call's write won (else another broker reports them). */
  async #close(request: ApprovalRequest, status: Extract<ApprovalStatus, { kind: 'denied' | 'expired' }>, now: number, notified = true): Promise<ApprovalEvent[] | undefined> {
    const next: ApprovalRequest = { ...request, state: status.kind, closedAt: iso(now), notified, rev: request.rev + 1 };
    if (!(await this.#store.replace(next))) return undefined;
    const base = { id: request.id, secret: request.secret, version: request.version, expiresAt: request.expiresAt };
    return [...grantEvents(request, status.granted), { ...base, event: status.kind, approvers: status.kind === 'denied' && status.by ? [status.by] : [] }];
  }
}

/** One `granted` event per counted grant (audited when the request ends). */
function grantEvents(request: ApprovalRequest, granted: readonly string[]): ApprovalEvent[] {
  return granted.map((kid) => ({
    event: 'granted' as const,
    id: request.id,
    secret: request.secret,
    version: request.version,
    approvers: [kid],
    expiresAt: request.expiresAt,
    ...(request.grants.find((g) => g.kid === kid)?.at ? { at: request.grants.find((g) => g.kid === kid)!.at } : {}),
  }));
}
