import { isAttestationError, type AsyncVerifier, type TrustedRoot, type VerifiedDocument, type Verifier } from './verify/index.js';
import { attestedInstanceOf, callerCode, checkRevoked, decide, type ApprovedBaselines, type Decision, type EnclaveIdentity, type InstanceTags } from './policy/decide.js';
import { InstanceTagsUnavailableError } from './ec2/instance-tags.js';
import { countApprovals } from './policy/baseline.js';
import type { KeyObject } from 'node:crypto';
import { SECRET_NAME } from './policy/schema.js';
import type { Binding, ProviderName } from './policy/types.js';
import { pcrsFromDocument, type PcrValues } from '../lib/pcrs.js';
import type { BindingStore, StoreSnapshot } from './store/store.js';
import { keyIdentity, keyRefOf, SecretUnavailableError, type KeyProvider, type KeyProviders } from './kms/provider.js';
import { AUDITED_PCRS, AuditUnavailableError, type AuditSink, type DecisionRecord } from './audit/sink.js';
import type { ChallengeService } from './challenge.js';
import type { SigningKey } from './signing-key.js';
import { SecretCache } from './secret-cache.js';
import { RecipientKeyCache, type RecipientKey } from './recipient-key.js';
import { encryptCompactRsaOaep256A256Gcm, signCompactEdDSA } from './seal/compact.js';
import type { BrokerMetrics } from './metrics.js';
import { Quarantine, RateLimiter, type QuarantineStore, type RateLimitSettings } from './rate-limit.js';
import { NonceRegistryUnavailableError, type NonceRegistry, type NonceUse } from './nonce/registry.js';
import { QuarantineUnavailableError } from './quarantine/store.js';
import { BrokerError } from './errors.js';
import { buildRecipientReleaseClaims, buildReleaseClaims, RELEASE_JWS_TYPE, type BrokerErrorCode, type DelegationAnswer, type ReleasedSecret, type SignedReleaseClaims } from './protocol/index.js';
import { DelegationGate, identityOfSummary, type Admitted, type DelegationAudit, type DelegationRequest, type GateOutcome } from './delegation/gate.js';
import { auditCode, everyNameDenied, namesDenied, refusal, type Denial, type DenialReason } from './release/denial.js';
import { identityKeyOf, identityOf, type IdentityKey } from './release/identity.js';
import type { ApprovalEvent, ApprovalGate, GateOutcome as ApprovalOutcome } from './approval/gate.js';
import { ApprovalError } from './approval/request.js';
import { approvalPendingError } from './approval/pending-error.js';
import type { PendingApproval } from './protocol/index.js';

export const MAX_NAMES = 32;

// Defined beside the limiter so broker/config.ts (every CLI command) need not load the release path.
export { DEFAULT_RATE_LIMITS, type RateLimitSettings } from './rate-limit.js';

export interface ReleaseDependencies {
  readonly verifier: Verifier;
  /** When set, documents are verified with this instead (signature checks on libuv's thread pool: the same verdicts). */
  readonly verifyOnPool?: AsyncVerifier;
  readonly roots: readonly TrustedRoot[];
  readonly allowDebug: boolean;
  readonly maxDocumentAgeMs: number;
  readonly store: BindingStore;
  readonly providers: KeyProviders;
  readonly audit: AuditSink;
  readonly challenge: ChallengeService;
  /** Single use of challenge nonces (per process, or shared by every replica). */
  readonly nonces: NonceRegistry;
  /** Quarantine state; default: in this process, from `rateLimits`. */
  readonly quarantine?: QuarantineStore;
  readonly signingKey: SigningKey;
  readonly metrics: BrokerMetrics;
  readonly secretCacheTtlMs: number;
  readonly rateLimits: RateLimitSettings;
  /** Admin public keys whose approvals make a baseline usable. */
  readonly adminKeys: readonly KeyObject[];
  /** Valid approvals from distinct admin keys a baseline needs (k of n). */
  readonly approvalsRequired: number;
  /** Tags of EC2 instances, for bindings restricted by `instances.ec2Tag` (cached; absent: such bindings are refused). */
  readonly instanceTags?: { tagsOf(instanceId: string): Promise<InstanceTags> };
  /** Human approval of bindings that require it (absent: such bindings are refused, fail closed). */
  readonly approvals?: ApprovalGate;
  readonly clock: () => number;
  /** Delegations (issue, admit, count uses); absent: requests carrying one are refused. */
  readonly delegations?: DelegationGate;
}

const hex = (b: Uint8Array | null | undefined): string | null => (b ? Buffer.from(b).toString('hex') : null);

/** One `POST /v1/secrets` as the pipeline sees it. */
interface ReleaseRequest {
  readonly names: readonly string[];
  readonly client: string;
  /** Broker wall clock for every decision of this request. */
  readonly now: number;
  /** performance.now() at arrival, for latency. */
  readonly started: number;
}

/** A step's typed outcome: its result, or the request's denial. */
type Outcome<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly denial: Denial };

const denied = (denial: Denial): { readonly ok: false; readonly denial: Denial } => ({ ok: false, denial });

/** The enclave's RSA-2048 key from the document, or a BAD_REQUEST. */
function recipientKey(doc: VerifiedDocument, keys: RecipientKeyCache): Outcome<RecipientKey> {
  if (!doc.publicKey) return denied(refusal('BAD_REQUEST', 'attestation document carries no public_key to encrypt to'));
  try {
    return { ok: true, value: keys.import(doc.publicKey) };
  } catch {
    return denied(refusal('BAD_REQUEST', 'attestation public_key is not an RSA-2048 SubjectPublicKeyInfo'));
  }
}

/** What `verify` establishes: an authentic, fresh document from an enclave we can encrypt to. */
interface Verified {
  readonly doc: VerifiedDocument;
  readonly recipient: RecipientKey;
  readonly identity: EnclaveIdentity;
  readonly identityKey: IdentityKey;
}

/** What a request is for: a release (never an inject binding) or a gateway token (inject bindings only). */
type Purpose = 'release' | 'gateway';

/** An inject binding is never released, and only an inject binding gets a gateway token (audited precisely; shown POLICY_DENIED). */
function purposeDenial(binding: Binding | undefined, purpose: Purpose): Decision | undefined {
  if (!binding) return undefined;
  if (purpose === 'release' && binding.inject) return { allow: false, reason: 'INJECT_ONLY', detail: 'an inject binding is only used by the gateway, never released' };
  if (purpose === 'gateway' && !binding.inject) return { allow: false, reason: 'NOT_INJECT', detail: 'not an inject binding' };
  return undefined;
}

/** What a gateway token request establishes (ReleaseService.admitGateway). */
export interface GatewayAdmission {
  readonly doc: VerifiedDocument;
  readonly identity: EnclaveIdentity;
  readonly identityKey: IdentityKey;
  readonly bindings: readonly Binding[];
  /** The broker clock the request was decided at. */
  readonly now: number;
}

/** One gateway call's policy answer: the current binding, or the code shown and the exact reason audited. */
export type GatewayDecision =
  | { readonly ok: true; readonly binding: Binding; readonly generation: number }
  | { readonly ok: false; readonly shown: BrokerErrorCode; readonly reason: string };

/** What `authorise` establishes: every name may be released, as these bindings of one store generation. */
interface Authorised {
  readonly bindings: readonly Binding[];
  readonly generation: number;
}

/** What the request came to, and the document when it verified (the audit records it). */
type Result = Outcome<{ readonly released: ReleasedSecret[]; readonly bindings: readonly Binding[]; readonly issued?: true }> & { readonly doc?: VerifiedDocument; readonly chain?: DelegationAudit | undefined } & ApprovalResult;

/** Human-approval events to audit with the request, and the requests a 202 names. */
interface ApprovalResult {
  readonly approvalEvents?: readonly ApprovalEvent[];
  readonly pending?: readonly PendingApproval[];
}

/**
 * Turns a verified attestation into released secrets, as a pipeline of named
 * steps: verify -> authorise -> unwrap -> seal -> record. Each step returns a
 * typed outcome (or, for seal, cannot refuse); `record` is the one place a
 * request's audit records are written, and only then is the answer given.
 * Any failure releases nothing (all names or none).
 */
export class ReleaseService {
  readonly #deps: ReleaseDependencies;
  readonly #cache: SecretCache;
  readonly #perClient: RateLimiter;
  readonly #perIdentity: RateLimiter;
  readonly #perSecret: RateLimiter;
  readonly #quarantine: QuarantineStore;
  readonly #recipientKeys = new RecipientKeyCache();
  #cacheGeneration = -1;
  #approved: { generation: number; value: Promise<ApprovedBaselines> } | undefined;

  constructor(deps: ReleaseDependencies) {
    this.#deps = deps;
    this.#cache = new SecretCache(deps.secretCacheTtlMs);
    const r = deps.rateLimits;
    this.#perClient = new RateLimiter(r.perClientPerSecond, r.perClientPerSecond * 2);
    this.#perIdentity = new RateLimiter(r.perIdentityPerSecond, r.perIdentityPerSecond * 2);
    this.#perSecret = new RateLimiter(r.perSecretPerSecond, r.perSecretPerSecond * 2);
    this.#quarantine = deps.quarantine ?? new Quarantine(r.quarantineAfterDenials, r.quarantineWindowSeconds * 1000, r.quarantineSeconds * 1000);
  }

  /**
   * Handles one `POST /v1/secrets`.
   *
   * @throws BrokerError with the code the caller is shown
   */
  async release(attestation: Uint8Array, names: readonly string[], client: string, delegation?: string): Promise<ReleasedSecret[]> {
    const req: ReleaseRequest = { names, client, now: this.#deps.clock(), started: performance.now() };
    return this.#run(req, () => this.#decide(req, attestation, delegation));
  }

  /**
   * Handles one `POST /v1/delegations`: an attested parent (or a sub-agent presenting its own
   * delegation) asks for a delegation of `request.names`; audited like a release, one record per name.
   *
   * @throws BrokerError with the code the caller is shown
   */
  async delegate(attestation: Uint8Array, request: DelegationRequest, client: string, presented?: string): Promise<DelegationAnswer> {
    const req: ReleaseRequest = { names: request.names, client, now: this.#deps.clock(), started: performance.now() };
    let answer: DelegationAnswer | undefined;
    await this.#run(req, () => this.#decideDelegation(req, attestation, request, presented, (a) => (answer = a)));
    if (!answer) throw new BrokerError('INTERNAL_ERROR', 'internal error; nothing was released');
    return answer;
  }

  /** Decides, records, answers; any unexpected failure releases nothing (fail closed). */
  async #run(req: ReleaseRequest, decide: () => Promise<Result>): Promise<ReleasedSecret[]> {
    try {
      return await this.#record(req, await decide());
    } catch (err) {
      return this.#failClosed(err);
    } finally {
      this.#deps.metrics.requestSeconds.observe((performance.now() - req.started) / 1000);
    }
  }

  /**
   * A gateway token request (broker/gateway): the same verify and authorise steps as a release (fresh
   * nonce consumed, quarantine, rate limits, revocation, policy), for inject bindings only; audited before
   * the answer (one `token` record per name, or the denial as for a release). Nothing is decrypted.
   *
   * @throws BrokerError with the code the caller is shown
   */
  async admitGateway(attestation: Uint8Array, names: readonly string[], client: string): Promise<GatewayAdmission> {
    const req: ReleaseRequest = { names, client, now: this.#deps.clock(), started: performance.now() };
    try {
      const verified = await this.#verify(req, attestation);
      if (!verified.ok) return (await this.#record(req, verified)) as never;
      const authorised = await this.#authorise(req, verified.value, 'gateway');
      if (!authorised.ok) return (await this.#record(req, { ...authorised, doc: verified.value.doc })) as never;
      await this.#record(req, { ok: true, value: { released: [], bindings: authorised.value.bindings }, doc: verified.value.doc }, 'token');
      return { doc: verified.value.doc, identity: verified.value.identity, identityKey: verified.value.identityKey, bindings: authorised.value.bindings, now: req.now };
    } catch (err) {
      return this.#failClosed(err);
    }
  }

  /**
   * One gateway call's policy, against the current store: the identity is not revoked and `name` is still an
   * inject binding this identity may use (a revocation or a policy change stops calls at once). The binding
   * returned is the current version (a rotation takes effect on the next call).
   */
  async gatewayDecision(identity: EnclaveIdentity, name: string): Promise<GatewayDecision> {
    let snapshot;
    try {
      snapshot = await this.#deps.store.refresh();
    } catch {
      return { ok: false, shown: 'STORE_UNAVAILABLE', reason: auditCode({ kind: 'store', file: 'unreachable' }) };
    }
    if (snapshot.revocationsProblem) return { ok: false, shown: 'STORE_UNAVAILABLE', reason: auditCode({ kind: 'store', file: 'revocations.json' }) };
    this.#dropStaleCache(snapshot.generation, snapshot.bindings);
    const binding = snapshot.bindings.get(name);
    const approved = await this.#approvedBaselines(snapshot);
    let decision: Decision =
      checkRevoked(identity, snapshot.revocations) ??
      (snapshot.invalidBindings.has(name) ? { allow: false, reason: 'STORE_INVALID', detail: 'the binding file fails validation' } : undefined) ??
      purposeDenial(binding, 'gateway') ??
      decide(binding, identity, snapshot.revocations, approved);
    if (!decision.allow && decision.reason === 'INSTANCE_TAGS_UNAVAILABLE') {
      const refused = new Map([[name, decision]]);
      const ec2Error = await this.#decideInstanceTags(identity, [name], snapshot, approved, refused);
      if (ec2Error !== undefined) return { ok: false, shown: 'STORE_UNAVAILABLE', reason: auditCode({ kind: 'instanceTags', ec2Error }) };
      decision = refused.get(name) ?? { allow: true, rule: 0 };
    }
    if (!decision.allow) return { ok: false, shown: callerCode(decision.reason), reason: decision.reason };
    return { ok: true, binding: binding!, generation: snapshot.generation };
  }

  /** An inject binding's value for one gateway call (value cache, key provider): a copy the caller wipes. */
  gatewayValue(binding: Binding, now: number, generation: number): Promise<Uint8Array> {
    return this.#plaintext(binding, now, generation);
  }

  /** Fail closed: a denial is rethrown (already recorded); anything else becomes a coded refusal that reveals nothing. */
  #failClosed(err: unknown): never {
    if (err instanceof BrokerError) throw err; // a denial, durably recorded by #record
    if (err instanceof AuditUnavailableError && err.storeError !== undefined) {
      // The shared audit store (DynamoDB) cannot take records: transient, like the other shared tables (retry later).
      this.#deps.metrics.denials.inc({ code: 'STORE_UNAVAILABLE' });
      throw new BrokerError('STORE_UNAVAILABLE', 'the shared audit store is unavailable; nothing was released', { cause: err });
    }
    // Fail closed: an unexpected failure (audit write included) releases nothing and reveals nothing.
    this.#deps.metrics.denials.inc({ code: 'INTERNAL_ERROR' });
    throw new BrokerError('INTERNAL_ERROR', 'internal error; nothing was released', { cause: err });
  }

  /** verify -> authorise -> unwrap -> seal: what the request comes to, nothing audited yet. */
  async #decide(req: ReleaseRequest, attestation: Uint8Array, delegation?: string): Promise<Result> {
    const verified = await this.#verify(req, attestation);
    if (!verified.ok) return verified;
    const doc = verified.value.doc;
    // Delegated: the token must admit this enclave, then the names are authorised for the chain's root, now.
    const admitted = delegation === undefined ? undefined : await this.#admit(req, verified.value, delegation);
    if (admitted && !admitted.ok) return { ...admitted, doc };
    const chain = admitted?.value.audit;
    const authorised = await this.#authorise(req, admitted ? asRoot(verified.value, admitted.value) : verified.value);
    if (!authorised.ok) return { ...authorised, doc, chain };
    // Human approval is asked of the enclave that presents the document (the sub-agent, when delegated).
    const gate = await this.#approval(req, verified.value, authorised.value.bindings);
    if (!gate.ok) return { ...gate, doc, chain };
    const spent = admitted && (await this.#deps.delegations!.take(admitted.value, 1, req.names, req.now));
    if (spent) return { ...denied(spent), doc, chain };
    const values = await this.#unwrap(req, authorised.value, attestation);
    if (!values.ok) return { ...values, doc, chain };
    const bindings = admitted ? DelegationGate.withinExpiry(admitted.value, authorised.value.bindings, req.now) : authorised.value.bindings;
    let released: ReleasedSecret[];
    try {
      released = this.#seal(req, verified.value, bindings, values.value);
    } catch {
      // The nonce is spent and the values were decrypted (and are wiped by #seal): the failure is this request's
      // audited decision, answered INTERNAL_ERROR like any other unexpected failure (fail closed, nothing released).
      return { ...denied(everyNameDenied('INTERNAL_ERROR', 'internal error; nothing was released', req.names)), doc, chain };
    }
    // Single use: the approval is spent (a conditional write) only now, so a KMS failure above does not use it up.
    const used = gate.value.kind === 'approved' ? await this.#consumeApproval(req, gate.value) : { ok: true as const, value: [] };
    if (!used.ok) return { ...used, doc, chain };
    return { ok: true, value: { released, bindings }, doc, chain, approvalEvents: used.value };
  }

  /** verify -> (admit the presented delegation) -> authorise for the root -> issue: nothing audited yet. */
  async #decideDelegation(req: ReleaseRequest, attestation: Uint8Array, request: DelegationRequest, presented: string | undefined, answer: (a: DelegationAnswer) => void): Promise<Result> {
    const verified = await this.#verify(req, attestation);
    if (!verified.ok) return verified;
    const doc = verified.value.doc;
    const gate = this.#deps.delegations;
    if (!gate) return { ...denied(refusal('BAD_REQUEST', 'this broker issues no delegations')), doc };
    const from = presented === undefined ? undefined : await this.#admit(req, verified.value, presented);
    if (from && !from.ok) return { ...from, doc };
    const authorised = await this.#authorise(req, from ? asRoot(verified.value, from.value) : verified.value);
    if (!authorised.ok) return { ...authorised, doc, chain: from?.value.audit };
    const approved = await this.#approvedBaselines(this.#deps.store.snapshot());
    const issued = await gate.issue({ request, doc, bindings: authorised.value.bindings, from: from?.value, nowMs: req.now, approved });
    if (!issued.ok) return { ...issued, doc };
    answer(issued.value.answer);
    return { ok: true, value: { released: [], bindings: authorised.value.bindings, issued: true }, doc, chain: issued.value.audit };
  }

  /** The gate's verdict on a presented delegation token, against the current revocations and approved baselines. */
  async #admit(req: ReleaseRequest, v: Verified, token: string): Promise<GateOutcome<Admitted>> {
    const gate = this.#deps.delegations;
    if (!gate) return denied(refusal('BAD_REQUEST', 'this broker accepts no delegations'));
    let snapshot;
    try {
      snapshot = await this.#deps.store.refresh();
    } catch {
      return denied(refusal('STORE_UNAVAILABLE', 'the store cannot be read; nothing was released', { kind: 'store', file: 'unreachable' }));
    }
    if (snapshot.revocationsProblem) return denied(refusal('STORE_UNAVAILABLE', 'the store cannot be fully loaded; nothing was released', { kind: 'store', file: 'revocations.json' }));
    // The presenter's own quarantine holds too (the root's is #authorise's): a token does not lift it.
    const quarantined = await this.#quarantineAnswer(() => this.#quarantine.isQuarantined(v.identityKey, req.now));
    if (typeof quarantined !== 'boolean') return denied(quarantined);
    if (quarantined) return denied(refusal('QUARANTINED', 'this enclave identity is quarantined after repeated denials'));
    const admitted = await gate.admit(token, v.identity, req.names, req.now, snapshot.revocations, await this.#approvedBaselines(snapshot));
    if (!admitted.ok) return admitted;
    // So do the delegates between the root (#authorise) and the presenter: a quarantined link stops what it delegated further.
    const chain = admitted.value.audit;
    for (const link of admitted.value.claims.chain.slice(1)) {
      const held = await this.#quarantineAnswer(() => this.#quarantine.isQuarantined(identityKeyOf(identityOfSummary(link)), req.now));
      if (held === true) return { ...denied(namesDenied('QUARANTINED', 'an enclave identity of the delegation chain is quarantined after repeated denials', req.names, new Map(req.names.map((n) => [n, { kind: 'delegation', code: 'QUARANTINED', detail: `quarantined:${link.moduleId}` }])))), chain };
      if (held !== false) return { ...denied(held), chain };
    }
    return admitted;
  }

  /**
   * Bindings that require human approval: a pending request (created now if this enclave has none open)
   * answers 202 and releases nothing, for any name; a denied or expired one refuses; k valid grants inside
   * the window let the request through. Runs after every other check (the nonce is consumed by then).
   */
  async #approval(req: ReleaseRequest, v: Verified, bindings: readonly Binding[]): Promise<Outcome<ApprovalOutcome> & ApprovalResult> {
    if (!bindings.some((b) => b.approval !== undefined)) return { ok: true, value: { kind: 'none' } };
    if (!this.#deps.approvals) return denied(everyNameDenied('STORE_UNAVAILABLE', 'human approval is not available on this broker; nothing was released', req.names));
    let outcome: ApprovalOutcome;
    try {
      outcome = await this.#deps.approvals.evaluate(bindings, v.identity, req.now);
    } catch (err) {
      if (!(err instanceof ApprovalError)) throw err;
      return denied(refusal('STORE_UNAVAILABLE', 'the approval store is unavailable; nothing was released', { kind: 'approvals', storeError: err.code }));
    }
    if (outcome.kind === 'pending') return { ...denied(everyNameDenied('APPROVAL_PENDING', 'human approval is pending; nothing was released (ask again once approved)', req.names)), approvalEvents: outcome.events, pending: outcome.pending };
    if (outcome.kind === 'refused') return { ...denied(everyNameDenied(outcome.code, outcome.message, req.names)), approvalEvents: outcome.events };
    return { ok: true, value: outcome };
  }

  /** Spends the approvals (single use); a concurrent request that spent one first leaves this one with nothing. */
  async #consumeApproval(req: ReleaseRequest, gate: Extract<ApprovalOutcome, { kind: 'approved' }>): Promise<Outcome<readonly ApprovalEvent[]> & ApprovalResult> {
    try {
      const { used, events } = await gate.consume(req.now);
      if (used) return { ok: true, value: events };
      return { ...denied(everyNameDenied('APPROVAL_CONSUMED', 'the approval was used by a concurrent request; nothing was released', req.names)), approvalEvents: events };
    } catch (err) {
      if (!(err instanceof ApprovalError)) throw err;
      return denied(refusal('STORE_UNAVAILABLE', 'the approval store is unavailable; nothing was released', { kind: 'approvals', storeError: err.code }));
    }
  }

  /**
   * The client is within its rate (checked before anything costly or audited
   * individually), the document verifies, its nonce is a fresh challenge of
   * ours (consumed now), and it carries a key to encrypt to.
   */
  async #verify(req: ReleaseRequest, attestation: Uint8Array): Promise<Outcome<Verified> & { readonly doc?: VerifiedDocument }> {
    const d = this.#deps;
    if (!this.#perClient.take(req.client, req.now)) return denied(refusal('RATE_LIMITED', 'too many requests from this client'));
    let doc: VerifiedDocument;
    const t0 = performance.now();
    try {
      const options = { at: req.now, roots: d.roots, maxAgeMs: d.maxDocumentAgeMs, allowDebug: d.allowDebug };
      doc = d.verifyOnPool ? await d.verifyOnPool(attestation, options) : d.verifier(attestation, options);
    } catch (err) {
      if (!isAttestationError(err)) throw err;
      return denied(refusal(err.code, err.message));
    } finally {
      d.metrics.verifySeconds.observe((performance.now() - t0) / 1000);
    }
    // Authentic and unexpired first (pure), so forged or stale nonces never reach the registry.
    const nonce = d.challenge.check(doc.nonce, req.now);
    const use = nonce.ok ? await this.#consumeNonce(nonce.id, nonce.rememberUntil, req.now) : nonce.problem;
    if (use === 'busy') return { ...denied(refusal('RATE_LIMITED', 'too many outstanding challenges; retry shortly')), doc };
    if (typeof use === 'string' && use !== 'fresh') return { ...denied(refusal('NONCE_MISMATCH', `the document nonce is not a usable challenge from this broker (${use})`)), doc };
    if (use !== 'fresh') return { ...denied(use), doc };
    const recipient = recipientKey(doc, this.#recipientKeys);
    if (!recipient.ok) return { ...recipient, doc };
    const identity = identityOf(doc);
    return { ok: true, value: { doc, recipient: recipient.value, identity, identityKey: identityKeyOf(identity) }, doc };
  }

  /**
   * Marks the nonce used: the registry's answer. A registry that
   * cannot answer (shared table throttled or unreachable) refuses the request with STORE_UNAVAILABLE
   * (503, retry later): whether the nonce was used before is unknown, so nothing may be released.
   */
  async #consumeNonce(id: string, rememberUntil: number, now: number): Promise<NonceUse | Denial> {
    try {
      return await this.#deps.nonces.consume(id, rememberUntil, now);
    } catch (err) {
      if (!(err instanceof NonceRegistryUnavailableError)) throw err;
      return refusal('STORE_UNAVAILABLE', 'the shared nonce registry is unavailable; nothing was released', { kind: 'nonces', registryError: err.registryError });
    }
  }

  /**
   * The quarantine's answer. A shared quarantine that cannot answer or record a denial (table throttled or
   * unreachable) refuses the request with STORE_UNAVAILABLE (503, retry later): whether the identity is
   * quarantined is unknown, and an unrecorded denial would let probing go uncounted, so nothing is released.
   */
  async #quarantineAnswer(ask: () => boolean | Promise<boolean>): Promise<boolean | Denial> {
    try {
      return await ask();
    } catch (err) {
      if (!(err instanceof QuarantineUnavailableError)) throw err;
      return refusal('STORE_UNAVAILABLE', 'the shared quarantine is unavailable; nothing was released', { kind: 'quarantine', storeError: err.storeError });
    }
  }

  /**
   * The identity is neither quarantined nor over its rate, the store is fully
   * loaded, and the policy allows every name (one refused name refuses them
   * all); then each secret's own rate.
   */
  async #authorise(req: ReleaseRequest, v: Verified, purpose: Purpose = 'release'): Promise<Outcome<Authorised>> {
    const { names, now } = req;
    const quarantined = await this.#quarantineAnswer(() => this.#quarantine.isQuarantined(v.identityKey, now));
    if (typeof quarantined !== 'boolean') return denied(quarantined);
    if (quarantined) return denied(refusal('QUARANTINED', 'this enclave identity is quarantined after repeated denials'));
    if (!this.#perIdentity.take(v.identityKey, now)) return denied(refusal('RATE_LIMITED', 'too many requests from this enclave identity'));

    let snapshot;
    try {
      snapshot = await this.#deps.store.refresh();
    } catch {
      // A shared store that cannot be read (DynamoDB down or throttled past its deadline): the last copy may
      // miss a revocation, so nothing is released; retryable, like a broken revocation list.
      return denied(refusal('STORE_UNAVAILABLE', 'the store cannot be read; nothing was released', { kind: 'store', file: 'unreachable' }));
    }
    // Fail closed: without a valid revocation list it is unknown who is revoked, so nobody gets anything.
    if (snapshot.revocationsProblem) {
      return denied(refusal('STORE_UNAVAILABLE', 'the store cannot be fully loaded; nothing was released', { kind: 'store', file: 'revocations.json' }));
    }
    this.#dropStaleCache(snapshot.generation, snapshot.bindings);
    const revoked = checkRevoked(v.identity, snapshot.revocations);
    const approved = await this.#approvedBaselines(snapshot);
    const invalid: Decision = { allow: false, reason: 'STORE_INVALID', detail: 'the binding file fails validation' };
    const refused = new Map<string, Extract<Decision, { allow: false }>>();
    for (const name of names) {
      const decision = revoked ?? (snapshot.invalidBindings.has(name) ? invalid : (purposeDenial(snapshot.bindings.get(name), purpose) ?? decide(snapshot.bindings.get(name), v.identity, snapshot.revocations, approved)));
      if (!decision.allow) refused.set(name, decision);
    }
    const tagErrors = await this.#decideInstanceTags(v.identity, names, snapshot, approved, refused);
    if (refused.size) {
      // A broken binding file is the admin's fault, not a sign of probing: it does not count towards quarantine (nor does EC2 being unreachable).
      if ([...refused.values()].some((dec) => dec.reason !== 'STORE_INVALID' && dec.reason !== 'INSTANCE_TAGS_UNAVAILABLE')) {
        const recorded = await this.#quarantineAnswer(async () => (await this.#quarantine.recordDenial(v.identityKey, now), true));
        if (typeof recorded !== 'boolean') return denied(recorded);
      }
      const reasons = new Map<string, DenialReason>(
        [...refused].map(([name, dec]) => [name, dec.reason === 'INSTANCE_TAGS_UNAVAILABLE' ? { kind: 'instanceTags', ec2Error: tagErrors ?? 'Error' } : { kind: 'policy', reason: dec.reason }]),
      );
      const isRevoked = [...refused.values()].some((dec) => callerCode(dec.reason) === 'REVOKED');
      // Only EC2 being unreachable stands between the request and its secrets: retryable (503), like the shared tables.
      if (!isRevoked && [...refused.values()].every((dec) => dec.reason === 'INSTANCE_TAGS_UNAVAILABLE')) {
        return denied(namesDenied('STORE_UNAVAILABLE', 'the EC2 instance tags cannot be read; nothing was released', names, reasons));
      }
      return isRevoked
        ? denied(namesDenied('REVOKED', 'this enclave identity is revoked', names, reasons))
        : denied(namesDenied('POLICY_DENIED', 'not allowed to read the requested secrets', names, reasons));
    }
    for (const name of names) {
      if (!this.#perSecret.take(name, now)) return denied(refusal('RATE_LIMITED', 'too many requests for a requested secret'));
    }
    return { ok: true, value: { bindings: names.map((n) => snapshot.bindings.get(n)!), generation: snapshot.generation } };
  }

  /**
   * Names refused only for want of the instance's tags (`instances.ec2Tag`; nothing else refuses them) are
   * decided again with the tags, looked up once for the attested instance (cached, single flight). If EC2
   * cannot be asked they stay refused (fail closed) and EC2's error name is returned for the audit.
   */
  async #decideInstanceTags(identity: EnclaveIdentity, names: readonly string[], snapshot: StoreSnapshot, approved: ApprovedBaselines, refused: Map<string, Extract<Decision, { allow: false }>>): Promise<string | undefined> {
    const waiting = names.filter((name) => refused.get(name)?.reason === 'INSTANCE_TAGS_UNAVAILABLE');
    const instance = attestedInstanceOf(identity);
    if (!waiting.length || instance === undefined) return undefined;
    let tags: InstanceTags;
    try {
      if (!this.#deps.instanceTags) throw new InstanceTagsUnavailableError('no EC2 tag lookup is configured', 'NotConfigured');
      tags = await this.#deps.instanceTags.tagsOf(instance);
    } catch (err) {
      if (!(err instanceof InstanceTagsUnavailableError)) throw err;
      return err.ec2Error;
    }
    for (const name of waiting) {
      const decision = decide(snapshot.bindings.get(name), identity, snapshot.revocations, approved, tags);
      if (decision.allow) refused.delete(name);
      else refused.set(name, decision);
    }
    return undefined;
  }

  /**
   * Every value, decrypted (or from the cache). Each is a copy this request
   * owns (never the cache's buffer): wiped by `#seal` once sealed, or here if
   * any name fails, and by nobody else, so a rotation or eviction meanwhile
   * cannot change what is sealed.
   */
  async #unwrap(req: ReleaseRequest, { bindings, generation }: Authorised, attestation: Uint8Array): Promise<Outcome<Uint8Array[]>> {
    const settled = await Promise.allSettled(bindings.map((b) => (b.mode === 'kms-recipient' ? this.#forRecipient(b, attestation) : this.#plaintext(b, req.now, generation))));
    const values = settled.map((r) => (r.status === 'fulfilled' ? r.value : new Uint8Array(0)));
    if (settled.every((r) => r.status === 'fulfilled')) return { ok: true, value: values };
    for (const value of values) value.fill(0);
    return denied(this.#providerFailed(req, settled, bindings));
  }

  /** Encrypts every value to the enclave, in a broker-signed statement bound to this request; wipes the values. Synchronous (node:crypto): no promise per name. */
  #seal(req: ReleaseRequest, v: Verified, bindings: readonly Binding[], values: readonly Uint8Array[]): ReleasedSecret[] {
    try {
      const released: ReleasedSecret[] = [];
      for (let i = 0; i < bindings.length; i++) released.push(this.#sealOne(bindings[i]!, values[i]!, v.doc, v.recipient, req.now));
      return released;
    } finally {
      for (const value of values) value.fill(0);
    }
  }

  /**
   * The one place a request's audit records are written, durably, before the
   * answer goes out: one record per released name; for a denial, one record
   * per requested name, or one sampled record when the refusal does not
   * depend on the names. A failed write answers INTERNAL_ERROR (fail closed).
   *
   * @throws BrokerError for a denial, once it is recorded
   */
  async #record(req: ReleaseRequest, result: Result, granted: 'release' | 'token' = 'release'): Promise<ReleasedSecret[]> {
    const { audit, metrics } = this.#deps;
    const doc = result.doc;
    const entry = (decision: DecisionRecord['decision'], code: string, secret: string | null, version: number | null): DecisionRecord => ({
      time: new Date(req.now).toISOString(),
      decision,
      code,
      secret,
      version,
      moduleId: doc?.moduleId ?? null,
      pcrs: doc ? pcrsFromDocument(doc.pcrs, AUDITED_PCRS) : null,
      docSha256: doc?.documentSha256 ?? null,
      nonce: hex(doc?.nonce),
      client: req.client,
      latencyMs: Math.round((performance.now() - req.started) * 1000) / 1000,
      ...(result.chain ? { delegation: result.chain } : {}),
    });
    // Human-approval events (request created, grants, denial, expiry, release), each naming the approver keys.
    const approvals = (result.approvalEvents ?? []).map((e): DecisionRecord => ({
      ...entry('approval', `APPROVAL_${e.event.toUpperCase()}`, e.secret, e.version),
      approval: { id: e.id, event: e.event, approvers: e.approvers, expiresAt: e.expiresAt, ...(e.at ? { at: e.at } : {}) },
    }));
    if (!result.ok) {
      const { denial } = result;
      metrics.denials.inc({ code: denial.shown });
      if (denial.scope === 'request') {
        // Name-independent (unverified document, stale nonce, rate limit, bad request): one bounded record
        // per request, sampled per client, so junk cannot fill the audit disk.
        await audit.appendRefusal(entry('deny', auditCode(denial.reason), null, null));
      } else {
        // Per-name decisions: one batch, one fsync for all the names of the request.
        const shown: DenialReason = { kind: 'shown', code: denial.shown };
        await Promise.all(req.names.map((name) => audit.append(entry('deny', auditCode(denial.reasons.get(name) ?? shown), name, null))));
      }
      await Promise.all(approvals.map((record) => audit.append(record)));
      if (denial.shown === 'APPROVAL_PENDING') throw approvalPendingError(denial.message, result.pending ?? []);
      throw new BrokerError(denial.shown, denial.message);
    }
    const { released, bindings, issued } = result.value;
    const decision = issued ? 'delegate' : granted;
    const code = issued ? 'DELEGATED' : granted === 'release' ? 'RELEASED' : 'GATEWAY_TOKEN';
    await Promise.all([...bindings.map((b) => audit.append(entry(decision, code, b.secret, b.version))), ...approvals.map((record) => audit.append(record))]);
    if (!issued && granted === 'release') for (const b of bindings) metrics.released(b.secret);
    return released;
  }

  /** Baselines with k valid admin approvals; signatures are checked once per store change. */
  #approvedBaselines(snapshot: StoreSnapshot): Promise<ApprovedBaselines> {
    if (this.#approved?.generation !== snapshot.generation) {
      const { adminKeys, approvalsRequired } = this.#deps;
      const value = (async () => {
        const out = new Map<string, PcrValues>();
        for (const [name, baseline] of snapshot.baselines) {
          if (adminKeys.length && (await countApprovals(baseline, adminKeys)) >= approvalsRequired) out.set(name, baseline.pcrs);
        }
        return out;
      })();
      this.#approved = { generation: snapshot.generation, value };
    }
    return this.#approved.value;
  }

  #dropStaleCache(generation: number, bindings: ReadonlyMap<string, Binding>): void {
    if (generation === this.#cacheGeneration) return;
    this.#cacheGeneration = generation;
    this.#cache.retain(new Set([...bindings.values()].filter((b) => !b.revoked).map((b) => SecretCache.key(b.secret, b.version, b.ciphertext))));
  }

  /**
   * Some value could not be decrypted: nothing is released. A permanent refusal (SECRET_UNAVAILABLE)
   * outranks a transient one (KMS_UNAVAILABLE) since retrying cannot help; each failed name is audited
   * with the provider's own error name, and a key found disabled or deleted loses all its cached values.
   */
  #providerFailed(req: ReleaseRequest, settled: ReadonlyArray<PromiseSettledResult<Uint8Array>>, bindings: readonly Binding[]): Denial {
    const failed = new Map<string, DenialReason>();
    let permanent = false;
    settled.forEach((result, i) => {
      if (result.status === 'fulfilled') return;
      const binding = bindings[i]!;
      const err = result.reason as Error & { providerError?: string };
      const code = err instanceof SecretUnavailableError ? 'SECRET_UNAVAILABLE' : 'KMS_UNAVAILABLE';
      permanent ||= code === 'SECRET_UNAVAILABLE';
      if (err instanceof SecretUnavailableError) this.forgetKeys(binding.provider, err.unusableKeys);
      failed.set(binding.secret, { kind: 'provider', code, providerError: err.providerError ?? err.name });
    });
    return permanent
      ? namesDenied('SECRET_UNAVAILABLE', 'a requested secret cannot be decrypted by its key provider; nothing was released', req.names, failed)
      : namesDenied('KMS_UNAVAILABLE', 'the key provider is unavailable; nothing was released', req.names, failed);
  }

  /** Drops every cached value decrypted under these keys (found disabled or deleted). */
  forgetKeys(provider: ProviderName, keyRefs: readonly string[]): void {
    for (const keyRef of keyRefs) this.#cache.dropKey(keyIdentity(provider, keyRef));
  }

  /** The binding's value, as a copy the caller owns and wipes. */
  async #plaintext(binding: Binding, now: number, generation: number): Promise<Uint8Array> {
    const key = SecretCache.key(binding.secret, binding.version, binding.ciphertext);
    const cached = this.#cache.get(key, now);
    if (cached) {
      this.#deps.metrics.cache.inc({ result: 'hit' });
      return cached;
    }
    this.#deps.metrics.cache.inc({ result: 'miss' });
    const provider = this.#deps.providers.get(binding.provider);
    if (!provider) throw new Error(`no ${binding.provider} key provider is configured`);
    const t0 = performance.now();
    const keyRef = keyRefOf(binding);
    const keyTag = keyIdentity(binding.provider, keyRef);
    const epoch = this.#cache.keyEpoch(keyTag);
    try {
      const value = await provider.decrypt(binding.ciphertext, binding.secret, keyRef);
      // A store change during the decrypt may have dropped this version, and a key found disabled
      // meanwhile dropped its values: in either case do not cache it back.
      if (generation === this.#cacheGeneration) this.#cache.set(key, value, now, keyTag, epoch);
      return value;
    } finally {
      this.#deps.metrics.kmsSeconds.observe((performance.now() - t0) / 1000);
    }
  }

  /**
   * Mode kms-recipient: KMS's ciphertext of the value for the enclave's own key (the verified document
   * itself goes to KMS as Recipient). The broker never holds the value, so nothing is cached: the value
   * cache does not apply, and every release asks KMS.
   */
  async #forRecipient(binding: Binding, attestation: Uint8Array): Promise<Uint8Array> {
    const provider: KeyProvider | undefined = this.#deps.providers.get(binding.provider);
    if (!provider) throw new Error(`no ${binding.provider} key provider is configured`);
    if (!provider.decryptForRecipient) throw new SecretUnavailableError(`the ${binding.provider} provider cannot encrypt to an enclave (kms-recipient)`, { providerError: 'RecipientUnsupported' });
    const t0 = performance.now();
    try {
      return await provider.decryptForRecipient(binding.ciphertext, binding.secret, keyRefOf(binding), attestation);
    } finally {
      this.#deps.metrics.kmsSeconds.observe((performance.now() - t0) / 1000);
    }
  }

  /** `value` is the value (mode jwe) or KMS's recipient ciphertext of it (mode kms-recipient). */
  #sealOne(binding: Binding, value: Uint8Array, doc: VerifiedDocument, recipient: RecipientKey, now: number): ReleasedSecret {
    const claims: SignedReleaseClaims = (binding.mode === 'kms-recipient' ? buildRecipientReleaseClaims : buildReleaseClaims)({
      secret: binding.secret,
      version: binding.version,
      value,
      text: binding.text,
      ttlSeconds: binding.ttlSeconds,
      issuedAtMs: now,
      nonceHex: hex(doc.nonce)!,
      documentSha256: doc.documentSha256,
      moduleId: doc.moduleId,
    });
    // node:crypto, synchronously: the same JWS and JWE jose would make, without WebCrypto's per-call cost (seal/compact.ts).
    const jws = signCompactEdDSA({ alg: 'EdDSA', kid: this.#deps.signingKey.kid, typ: RELEASE_JWS_TYPE }, Buffer.from(JSON.stringify(claims), 'utf8'), this.#deps.signingKey.privateKey);
    const jwe = encryptCompactRsaOaep256A256Gcm({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: RELEASE_JWS_TYPE, kid: binding.secret }, Buffer.from(jws, 'latin1'), recipient);
    return { name: binding.secret, version: binding.version, ttlSeconds: binding.ttlSeconds, jwe };
  }
}

/** The verified presenter, seen by the policy and abuse controls as the delegation chain's root. */
function asRoot(v: Verified, admitted: Admitted): Verified {
  return { ...v, identity: admitted.root, identityKey: identityKeyOf(admitted.root) };
}

/** Validates the requested names: 1..32 distinct secret names. */
export function validateNames(value: unknown): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > MAX_NAMES) {
    throw new BrokerError('BAD_REQUEST', `names must be an array of 1..${MAX_NAMES} secret names`);
  }
  const names = value.map((n) => {
    if (typeof n !== 'string' || !SECRET_NAME.test(n)) throw new BrokerError('BAD_REQUEST', 'names must be secret names ([A-Za-z0-9._-], up to 128)');
    return n;
  });
  if (new Set(names).size !== names.length) throw new BrokerError('BAD_REQUEST', 'names must not repeat');
  return names;
}
