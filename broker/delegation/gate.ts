import { randomBytes } from 'node:crypto';
import { checkRevoked, type ApprovedBaselines, type EnclaveIdentity } from '../policy/decide.js';
import type { Binding, Revocations } from '../policy/types.js';
import { pcrsFromDocument, pcrsInclude, type PcrValues } from '../../lib/pcrs.js';
import type { VerifiedDocument } from '../verify/index.js';
import { DELEGATION_VERSION, SUMMARY_PCRS, type AttestationSummary, type BrokerErrorCode, type DelegationAnswer, type DelegationAudience, type DelegationClaims } from '../protocol/index.js';
import type { SigningKey } from '../signing-key.js';
import { namesDenied, refusal, type Denial, type DenialReason } from '../release/denial.js';
import { DelegationRegistryUnavailableError, newDelegationId, type DelegationRecord, type DelegationRegistry, type UseOutcome } from './registry.js';
import type { DelegationSettings } from './settings.js';
import { readDelegation, signDelegation } from './token.js';

/** A typed step outcome (as in release.ts): the value, or the request's denial. */
export type GateOutcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly denial: Denial; readonly chain?: DelegationAudit };

/** What the audit records of a delegated release or an issued delegation: the whole chain. */
export interface DelegationAudit {
  readonly id: string;
  readonly depth: number;
  /** Root parent first, then every delegate that delegated further; each its module id and PCR0. */
  readonly chain: ReadonlyArray<{ readonly moduleId: string; readonly pcr0: string | null }>;
  /** The delegation ids this one was derived from, root first. */
  readonly parents: readonly string[];
  /** An issued delegation: whom it is for, until when (seconds since the epoch), how many uses. */
  readonly grant?: { readonly aud: DelegationAudience; readonly exp: number; readonly maxUses: number };
}

/** A presented token that checked out: whose authority it carries, and what it allows. */
export interface Admitted {
  readonly claims: DelegationClaims;
  /** The chain's root: the identity whose policy must still grant every name. */
  readonly root: EnclaveIdentity;
  readonly audit: DelegationAudit;
}

/** What a parent asks for (`POST /v1/delegations`), validated for shape by the HTTP layer. */
export interface DelegationRequest {
  readonly names: readonly string[];
  readonly ttlSeconds: number;
  readonly audience: DelegationAudience;
  readonly maxUses: number;
}

/** What the broker knows about a parent that asks for a delegation, once its document and names are authorised. */
export interface IssueInput {
  readonly request: DelegationRequest;
  readonly doc: VerifiedDocument;
  /** The bindings of the names, as authorised for the root now (their TTLs bound the delegation's). */
  readonly bindings: readonly Binding[];
  /** The delegation the parent presented (it is then itself a sub-agent), if any. */
  readonly from: Admitted | undefined;
  readonly nowMs: number;
  readonly approved: ApprovedBaselines;
}

const fail = (shown: BrokerErrorCode, message: string, detail: string, names?: readonly string[], chain?: DelegationAudit): { ok: false; denial: Denial; chain?: DelegationAudit } => {
  const reason: DenialReason = { kind: 'delegation', code: shown, detail };
  const denial = names ? namesDenied(shown, message, names, new Map(names.map((n) => [n, reason]))) : refusal(shown, message, reason);
  return chain ? { ok: false, denial, chain } : { ok: false, denial };
};

/** What the broker keeps of an attested enclave for a chain. */
export function summaryOf(doc: VerifiedDocument): AttestationSummary {
  return { moduleId: doc.moduleId, pcrs: pcrsFromDocument(doc.pcrs, SUMMARY_PCRS), debug: doc.debug, doc: doc.documentSha256, at: doc.timestamp };
}

/** The identity the policy sees of a summary (only the PCRs a policy may check are kept). */
export function identityOfSummary(s: AttestationSummary): EnclaveIdentity {
  return { moduleId: s.moduleId, pcrs: s.pcrs as PcrValues, debug: s.debug };
}

/** The PCRs an audience stands for now: its own, or an approved, unrevoked baseline's; undefined when none. */
function audiencePcrs(aud: DelegationAudience, approved: ApprovedBaselines, revocations: Revocations): PcrValues | undefined {
  if ('pcrs' in aud) return aud.pcrs as PcrValues;
  if (revocations.baselines.includes(aud.baseline)) return undefined;
  return approved.get(aud.baseline);
}

/**
 * Delegations: issuing them to attested parents, and admitting the tokens sub-agents present. Pure
 * decisions over the verified inputs plus the registry (uses and revocations, shared by replicas); the
 * release pipeline (release.ts) verifies documents, authorises names for the chain's root and audits.
 */
export class DelegationGate {
  constructor(
    private readonly registry: DelegationRegistry,
    private readonly signingKey: SigningKey,
    private readonly settings: DelegationSettings,
  ) {}

  /** The registry's answer, or STORE_UNAVAILABLE when it cannot give one (fail closed). */
  async #registry<T>(ask: () => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; denial: Denial }> {
    try {
      return { ok: true, value: await ask() };
    } catch (err) {
      if (!(err instanceof DelegationRegistryUnavailableError)) throw err;
      return fail('STORE_UNAVAILABLE', 'the delegation registry is unavailable; nothing was released', 'registry-unavailable');
    }
  }

  /**
   * Checks a presented token for the enclave presenting it (`presenter`, verified, nonce consumed): the
   * broker signed it, it is unexpired, covers every name, the presenter is its audience, no identity of
   * the chain (nor the presenter) is revoked, and neither it nor any delegation it derives from is
   * revoked or unknown. Whether the root may still read the names is the policy's (release.ts).
   */
  async admit(token: unknown, presenter: EnclaveIdentity, names: readonly string[], nowMs: number, revocations: Revocations, approved: ApprovedBaselines): Promise<GateOutcome<Admitted>> {
    const read = await readDelegation(token, this.signingKey);
    if (!read.ok) return fail('DELEGATION_INVALID', 'the delegation token is not valid for this broker', read.reason);
    const claims = read.claims;
    const audit: DelegationAudit = {
      id: claims.jti,
      depth: claims.depth,
      chain: claims.chain.map((s) => ({ moduleId: s.moduleId, pcr0: s.pcrs['0'] ?? null })),
      parents: claims.parents,
    };
    if (claims.exp * 1000 <= nowMs) return fail('DELEGATION_EXPIRED', 'the delegation has expired', 'expired', names, audit);
    if (claims.depth > this.settings.maxDepth) return fail('DELEGATION_NOT_ALLOWED', 'the delegation chain is deeper than this broker allows', 'depth', names, audit);
    const outside = names.filter((n) => !claims.names.includes(n));
    if (outside.length) return fail('DELEGATION_NOT_ALLOWED', 'a requested name is outside the delegation', 'names', names, audit);
    const wanted = audiencePcrs(claims.aud, approved, revocations);
    if (!wanted || presenter.debug || !pcrsInclude(presenter.pcrs, wanted)) return fail('AUDIENCE_MISMATCH', 'this enclave is not the audience of the delegation', 'audience', names, audit);
    for (const identity of [...claims.chain.map(identityOfSummary), presenter]) {
      if (checkRevoked(identity, revocations)) return fail('REVOKED', 'an identity of the delegation chain is revoked', `revoked:${identity.moduleId}`, names, audit);
    }
    const records = await this.#registry(() => this.registry.get([...claims.parents, claims.jti]));
    if (!records.ok) return { ...records, chain: audit };
    for (const id of [...claims.parents, claims.jti]) {
      const record = records.value.get(id);
      if (!record) return fail('DELEGATION_INVALID', 'the delegation is not recorded by this broker', `unknown:${id}`, names, audit);
      if (record.revoked) return fail('DELEGATION_REVOKED', 'the delegation is revoked', `revoked:${id}`, names, audit);
    }
    // Every delegate in the middle of the chain (chain[i + 1]) must still be the audience of the delegation it
    // was given (parents[i]): a baseline revoked or unapproved since stops what it delegated further, too.
    for (const [i, id] of claims.parents.entries()) {
      const given = audiencePcrs(records.value.get(id)!.aud, approved, revocations);
      if (!given || !pcrsInclude(claims.chain[i + 1]!.pcrs as PcrValues, given)) {
        return fail('AUDIENCE_MISMATCH', 'an enclave of the delegation chain is no longer the audience of the delegation it was given', `audience-of:${id}`, names, audit);
      }
    }
    return { ok: true, value: { claims, root: identityOfSummary(claims.chain[0]!), audit } };
  }

  /**
   * The bindings as a delegated release serves them: no TTL past the delegation's expiry (TTL only
   * shrinks along a chain), so a sub-agent's cache cannot outlive its delegation.
   */
  static withinExpiry(admitted: Admitted, bindings: readonly Binding[], nowMs: number): Binding[] {
    const left = Math.max(1, admitted.claims.exp - Math.floor(nowMs / 1000));
    return bindings.map((b) => (b.ttlSeconds > left ? { ...b, ttlSeconds: left } : b));
  }

  /** Takes `count` uses of an admitted delegation (conditional: replicas never exceed maxUses). */
  async take(admitted: Admitted, count: number, names: readonly string[], nowMs: number): Promise<Denial | undefined> {
    const outcome = await this.#registry(() => this.registry.use(admitted.claims.jti, count, Math.floor(nowMs / 1000)));
    if (!outcome.ok) return outcome.denial;
    return this.#useDenial(outcome.value, names);
  }

  #useDenial(outcome: UseOutcome, names: readonly string[]): Denial | undefined {
    switch (outcome) {
      case 'ok':
        return undefined;
      case 'unknown':
        return fail('DELEGATION_INVALID', 'the delegation is not recorded by this broker', 'unknown', names).denial;
      case 'revoked':
        return fail('DELEGATION_REVOKED', 'the delegation is revoked', 'revoked', names).denial;
      case 'expired':
        return fail('DELEGATION_EXPIRED', 'the delegation has expired', 'expired', names).denial;
      case 'exhausted':
        return fail('DELEGATION_EXHAUSTED', 'the delegation has no uses left', 'exhausted', names).denial;
    }
  }

  /**
   * Issues a delegation to a parent whose document verified and whose root may read every name now.
   * Only narrows: TTL within the names' binding TTLs, the configured maximum and (for a sub-delegation)
   * what is left of the one presented; names within it; uses within the configured maximum, taken out of
   * the presented delegation's remaining uses (so a whole tree never releases more than its root allowed);
   * depth within maxDepth. Records it, then signs it.
   */
  async issue(input: IssueInput): Promise<GateOutcome<{ answer: DelegationAnswer; audit: DelegationAudit }>> {
    const { request, from, nowMs, doc } = input;
    const names = request.names;
    const depth = (from?.claims.depth ?? 0) + 1;
    const iat = Math.floor(nowMs / 1000);
    const exp = iat + request.ttlSeconds;
    const chain = [...(from?.claims.chain ?? []), summaryOf(doc)];
    const parents = from ? [...from.claims.parents, from.claims.jti] : [];
    const id = newDelegationId(randomBytes(16));
    const audit: DelegationAudit = { id, depth, chain: chain.map((s) => ({ moduleId: s.moduleId, pcr0: s.pcrs['0'] ?? null })), parents };
    const bindingTtl = Math.min(...input.bindings.map((b) => b.ttlSeconds));
    if (depth > this.settings.maxDepth) return fail('DELEGATION_NOT_ALLOWED', `delegation chains are at most ${this.settings.maxDepth} deep`, 'depth', names, audit);
    if (request.ttlSeconds > this.settings.maxTtlSeconds) return fail('DELEGATION_NOT_ALLOWED', `ttlSeconds exceeds the broker's maximum (${this.settings.maxTtlSeconds})`, 'ttl-max', names, audit);
    if (request.ttlSeconds > bindingTtl) return fail('DELEGATION_NOT_ALLOWED', `ttlSeconds exceeds the parent's TTL for these names (${bindingTtl})`, 'ttl-binding', names, audit);
    if (from && exp > from.claims.exp) return fail('DELEGATION_NOT_ALLOWED', 'ttlSeconds exceeds what is left of the presented delegation', 'ttl-parent', names, audit);
    if (request.maxUses > this.settings.maxUses) return fail('DELEGATION_NOT_ALLOWED', `maxUses exceeds the broker's maximum (${this.settings.maxUses})`, 'uses-max', names, audit);
    if ('pcrs' in request.audience) {
      const pcrs = request.audience.pcrs;
      if (['0', '1', '2'].every((i) => /^0+$/.test(pcrs[i] ?? ''))) return fail('DELEGATION_NOT_ALLOWED', 'the audience must not be a debug enclave (PCR0/1/2 all zero)', 'audience-debug', names, audit);
    } else if (!input.approved.has(request.audience.baseline)) {
      return fail('DELEGATION_NOT_ALLOWED', 'the audience baseline is not an approved baseline', 'audience-baseline', names, audit);
    }
    // Reserve the uses out of the presented delegation first: a failure after this only wastes uses (fail closed).
    if (from) {
      const denial = await this.take(from, request.maxUses, names, nowMs);
      if (denial) return { ok: false, denial, chain: audit };
    }
    const root = chain[0]!;
    const record: DelegationRecord = {
      id,
      parent: { moduleId: root.moduleId, pcr0: root.pcrs['0'] ?? '' },
      from: from?.claims.jti ?? null,
      depth,
      names: [...names],
      iat,
      exp,
      maxUses: request.maxUses,
      aud: request.audience,
      uses: 0,
      revoked: false,
    };
    const created = await this.#registry(() => this.registry.create(record));
    if (!created.ok) return { ...created, chain: audit };
    const claims: DelegationClaims = { v: DELEGATION_VERSION, iss: 'keygate', jti: id, iat, exp, names: [...names], maxUses: request.maxUses, aud: request.audience, depth, chain, parents };
    const token = await signDelegation(claims, this.signingKey);
    return { ok: true, value: { answer: { delegation: token, id, exp }, audit: { ...audit, grant: { aud: request.audience, exp, maxUses: request.maxUses } } } };
  }
}
