import { CompactEncrypt, CompactSign } from 'jose';
import { isAttestationError, type TrustedRoot, type VerifiedDocument, type Verifier } from './verify/index.js';
import { callerCode, checkRevoked, decide, instanceIdOf, type ApprovedBaselines, type Decision, type EnclaveIdentity } from './policy/decide.js';
import { countApprovals } from './policy/baseline.js';
import type { KeyObject } from 'node:crypto';
import { SECRET_NAME } from './policy/schema.js';
import type { Binding, PcrValues, ProviderName } from './policy/types.js';
import type { BindingStore, StoreSnapshot } from './store/file-store.js';
import { keyIdentity, SecretUnavailableError, type KeyProvider } from './kms/provider.js';
import type { AuditLog, DecisionRecord } from './audit/log.js';
import type { ChallengeService } from './challenge.js';
import type { SigningKey } from './signing-key.js';
import { SecretCache } from './secret-cache.js';
import { importRsa2048Spki, type RecipientKey } from './recipient-key.js';
import type { BrokerMetrics } from './metrics.js';
import { Quarantine, RateLimiter } from './rate-limit.js';
import { BrokerError, type BrokerErrorCode } from './errors.js';
import { buildReleaseClaims, type ReleaseClaims } from './protocol/index.js';

export const MAX_NAMES = 32;

/** One released secret, as the API returns it. */
export interface ReleasedSecret {
  readonly name: string;
  readonly version: number;
  readonly ttlSeconds: number;
  /** Compact JWE (RSA-OAEP-256 + A256GCM) to the attested key, wrapping a JWS signed by the broker. */
  readonly jwe: string;
}

/** The claims inside the broker-signed JWS an enclave receives: declared once, in the wire contract the agent checks. */
export type { ReleaseClaims } from './protocol/index.js';

export interface RateLimitSettings {
  readonly perClientPerSecond: number;
  readonly perIdentityPerSecond: number;
  readonly perSecretPerSecond: number;
  readonly quarantineAfterDenials: number;
  readonly quarantineWindowSeconds: number;
  readonly quarantineSeconds: number;
}

export const DEFAULT_RATE_LIMITS: RateLimitSettings = {
  perClientPerSecond: 200,
  perIdentityPerSecond: 20,
  perSecretPerSecond: 1000,
  quarantineAfterDenials: 10,
  quarantineWindowSeconds: 60,
  quarantineSeconds: 300,
};

export interface ReleaseDependencies {
  readonly verifier: Verifier;
  readonly roots: readonly TrustedRoot[];
  readonly allowDebug: boolean;
  readonly maxDocumentAgeMs: number;
  readonly store: BindingStore;
  readonly providers: ReadonlyMap<ProviderName, KeyProvider>;
  readonly audit: AuditLog;
  readonly challenge: ChallengeService;
  readonly signingKey: SigningKey;
  readonly metrics: BrokerMetrics;
  readonly secretCacheTtlMs: number;
  readonly rateLimits: RateLimitSettings;
  /** Admin public keys whose approvals make a baseline usable. */
  readonly adminKeys: readonly KeyObject[];
  /** Valid approvals from distinct admin keys a baseline needs (k of n). */
  readonly approvalsRequired: number;
  readonly clock: () => number;
}

const hex = (b: Uint8Array | null | undefined): string | null => (b ? Buffer.from(b).toString('hex') : null);

function identityOf(doc: VerifiedDocument): EnclaveIdentity {
  const pcrs = new Map<number, string>();
  for (const [i, v] of doc.pcrs) pcrs.set(i, Buffer.from(v).toString('hex'));
  return { moduleId: doc.moduleId, pcrs, debug: doc.debug };
}

/** The enclave's RSA-2048 key from the document, or a BAD_REQUEST. */
async function recipientKey(doc: VerifiedDocument): Promise<RecipientKey> {
  if (!doc.publicKey) throw new BrokerError('BAD_REQUEST', 'attestation document carries no public_key to encrypt to');
  try {
    return await importRsa2048Spki(doc.publicKey);
  } catch {
    throw new BrokerError('BAD_REQUEST', 'attestation public_key is not an RSA-2048 SubjectPublicKeyInfo');
  }
}

/**
 * Turns a verified attestation into released secrets: verify, consume the
 * nonce, check the recipient key, evaluate every name's binding, decrypt,
 * encrypt to the enclave, audit durably, and only then answer. Any failure
 * releases nothing (all names or none).
 */
export class ReleaseService {
  readonly #deps: ReleaseDependencies;
  readonly #cache: SecretCache;
  readonly #perClient: RateLimiter;
  readonly #perIdentity: RateLimiter;
  readonly #perSecret: RateLimiter;
  readonly #quarantine: Quarantine;
  #cacheGeneration = -1;
  #approved: { generation: number; value: Promise<ApprovedBaselines> } | undefined;

  constructor(deps: ReleaseDependencies) {
    this.#deps = deps;
    this.#cache = new SecretCache(deps.secretCacheTtlMs);
    const r = deps.rateLimits;
    this.#perClient = new RateLimiter(r.perClientPerSecond, r.perClientPerSecond * 2);
    this.#perIdentity = new RateLimiter(r.perIdentityPerSecond, r.perIdentityPerSecond * 2);
    this.#perSecret = new RateLimiter(r.perSecretPerSecond, r.perSecretPerSecond * 2);
    this.#quarantine = new Quarantine(r.quarantineAfterDenials, r.quarantineWindowSeconds * 1000, r.quarantineSeconds * 1000);
  }

  /**
   * Handles one `POST /v1/secrets`.
   *
   * @throws BrokerError with the code the caller is shown
   */
  async release(attestation: Uint8Array, names: readonly string[], client: string): Promise<ReleasedSecret[]> {
    const started = performance.now();
    const d = this.#deps;
    const now = d.clock();
    let doc: VerifiedDocument | undefined;
    const entry = (decision: DecisionRecord['decision'], code: string, secret: string | null, version: number | null): DecisionRecord => {
      const pcrs = doc ? Object.fromEntries([0, 1, 2, 4].filter((i) => doc!.pcrs.has(i)).map((i) => [String(i), hex(doc!.pcrs.get(i))])) : null;
      return {
        time: new Date(now).toISOString(),
        decision,
        code,
        secret,
        version,
        moduleId: doc?.moduleId ?? null,
        pcrs,
        docSha256: doc?.documentSha256 ?? null,
        nonce: hex(doc?.nonce),
        client,
        latencyMs: Math.round((performance.now() - started) * 1000) / 1000,
      };
    };
    const record = (decision: DecisionRecord['decision'], code: string, secret: string | null, version: number | null): Promise<void> =>
      d.audit.append(entry(decision, code, secret, version));
    // A refusal that does not depend on the names asked for (unverified document, stale nonce, rate limit,
    // bad request) is one bounded record per request, sampled per client: junk cannot fill the audit disk.
    const refuse = (code: string): Promise<void> => d.audit.appendRefusal(entry('deny', code, null, null));
    /** `reasons`: per-name decisions (a map), or the audit code of one name-independent refusal (a string). */
    const denyAll = async (shown: BrokerErrorCode, message: string, reasons?: ReadonlyMap<string, string> | string): Promise<never> => {
      d.metrics.denials.inc({ code: shown });
      // Per-name decisions: one batch, one fsync for all the names of the request.
      if (typeof reasons === 'object') await Promise.all(names.map((name) => record('deny', reasons.get(name) ?? shown, name, null)));
      else await refuse(reasons ?? shown);
      throw new BrokerError(shown, message);
    };

    try {
      if (!this.#perClient.take(client, now)) await denyAll('RATE_LIMITED', 'too many requests from this client');

      const t0 = performance.now();
      try {
        doc = d.verifier(attestation, { at: now, roots: d.roots, maxAgeMs: d.maxDocumentAgeMs, allowDebug: d.allowDebug });
      } catch (err) {
        if (!isAttestationError(err)) throw err;
        await denyAll(err.code, err.message);
      } finally {
        d.metrics.verifySeconds.observe((performance.now() - t0) / 1000);
      }
      const verified = doc!;

      const nonceProblem = d.challenge.consume(verified.nonce, now);
      if (nonceProblem === 'busy') await denyAll('RATE_LIMITED', 'too many outstanding challenges; retry shortly');
      if (nonceProblem) await denyAll('NONCE_MISMATCH', `the document nonce is not a usable challenge from this broker (${nonceProblem})`);
      const recipient = await recipientKey(verified);

      const identity = identityOf(verified);
      const identityKey = `${identity.pcrs.get(0) ?? '-'}|${instanceIdOf(verified.moduleId) ?? verified.moduleId}`;
      if (this.#quarantine.isQuarantined(identityKey, now)) await denyAll('QUARANTINED', 'this enclave identity is quarantined after repeated denials');
      if (!this.#perIdentity.take(identityKey, now)) await denyAll('RATE_LIMITED', 'too many requests from this enclave identity');

      const snapshot = await d.store.refresh();
      // Fail closed: without a valid revocation list it is unknown who is revoked, so nobody gets anything.
      if (snapshot.revocationsProblem) {
        await denyAll('STORE_UNAVAILABLE', 'the store cannot be fully loaded; nothing was released', 'STORE_UNAVAILABLE:revocations.json');
      }
      this.#dropStaleCache(snapshot.generation, snapshot.bindings);
      const revoked = checkRevoked(identity, snapshot.revocations);
      const approved = await this.#approvedBaselines(snapshot);
      const decisions = new Map<string, Decision>();
      const invalid: Decision = { allow: false, reason: 'STORE_INVALID', detail: 'the binding file fails validation' };
      for (const name of names) decisions.set(name, revoked ?? (snapshot.invalidBindings.has(name) ? invalid : decide(snapshot.bindings.get(name), identity, snapshot.revocations, approved)));
      const denied = [...decisions.entries()].filter((e): e is [string, Extract<Decision, { allow: false }>] => !e[1].allow);
      if (denied.length) {
        // A broken binding file is the admin's fault, not a sign of probing: it does not count towards quarantine.
        if (denied.some(([, dec]) => dec.reason !== 'STORE_INVALID')) this.#quarantine.recordDenial(identityKey, now);
        const reasons = new Map(names.map((n) => [n, 'BATCH_DENIED']));
        for (const [name, dec] of denied) reasons.set(name, dec.reason);
        const shown = denied.some(([, dec]) => callerCode(dec.reason) === 'REVOKED') ? 'REVOKED' : 'POLICY_DENIED';
        await denyAll(shown, shown === 'REVOKED' ? 'this enclave identity is revoked' : 'not allowed to read the requested secrets', reasons);
      }
      for (const name of names) {
        if (!this.#perSecret.take(name, now)) await denyAll('RATE_LIMITED', 'too many requests for a requested secret');
      }

      const bindings = names.map((n) => snapshot.bindings.get(n)!);
      const settled = await Promise.allSettled(bindings.map((b) => this.#plaintext(b, now, snapshot.generation)));
      // Every value is a copy this request owns (never the cache's buffer): wiped here once sealed or
      // refused, and by nobody else, so a rotation or eviction meanwhile cannot change what is sealed.
      const values = settled.map((r) => (r.status === 'fulfilled' ? r.value : new Uint8Array(0)));
      const released: ReleasedSecret[] = [];
      try {
        if (settled.some((r) => r.status === 'rejected')) return await this.#providerFailed(settled, bindings, denyAll);
        for (let i = 0; i < bindings.length; i++) {
          released.push(await this.#seal(bindings[i]!, values[i]!, verified, recipient, now));
        }
      } finally {
        for (const value of values) value.fill(0);
      }
      await Promise.all(bindings.map((b) => record('release', 'RELEASED', b.secret, b.version)));
      for (const b of bindings) d.metrics.released(b.secret);
      return released;
    } catch (err) {
      if (err instanceof BrokerError) {
        if (err.code === 'BAD_REQUEST') {
          d.metrics.denials.inc({ code: err.code });
          await refuse(err.code).catch(() => {});
        }
        throw err;
      }
      // Fail closed: an unexpected failure (audit write included) releases nothing and reveals nothing.
      d.metrics.denials.inc({ code: 'INTERNAL_ERROR' });
      throw new BrokerError('INTERNAL_ERROR', 'internal error; nothing was released', { cause: err });
    } finally {
      d.metrics.requestSeconds.observe((performance.now() - started) / 1000);
    }
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
  #providerFailed(
    settled: ReadonlyArray<PromiseSettledResult<Uint8Array>>,
    bindings: readonly Binding[],
    denyAll: (shown: BrokerErrorCode, message: string, reasons?: ReadonlyMap<string, string>) => Promise<never>,
  ): Promise<never> {
    const reasons = new Map(bindings.map((b) => [b.secret, 'BATCH_DENIED']));
    let permanent = false;
    settled.forEach((result, i) => {
      if (result.status === 'fulfilled') return;
      const binding = bindings[i]!;
      const err = result.reason as Error & { providerError?: string };
      const code = err instanceof SecretUnavailableError ? 'SECRET_UNAVAILABLE' : 'KMS_UNAVAILABLE';
      permanent ||= code === 'SECRET_UNAVAILABLE';
      if (err instanceof SecretUnavailableError) this.forgetKeys(binding.provider, err.unusableKeys);
      reasons.set(binding.secret, `${code}:${err.providerError ?? err.name}`);
    });
    return permanent
      ? denyAll('SECRET_UNAVAILABLE', 'a requested secret cannot be decrypted by its key provider; nothing was released', reasons)
      : denyAll('KMS_UNAVAILABLE', 'the key provider is unavailable; nothing was released', reasons);
  }

  /** Drops every cached value decrypted under these keys (found disabled or deleted). */
  forgetKeys(provider: ProviderName, kmsKeyIds: readonly string[]): void {
    for (const keyId of kmsKeyIds) this.#cache.dropKey(keyIdentity(provider, keyId));
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
    const keyTag = keyIdentity(binding.provider, binding.kmsKeyId);
    const epoch = this.#cache.keyEpoch(keyTag);
    try {
      const value = await provider.decrypt(binding.ciphertext, binding.secret, binding.kmsKeyId);
      // A store change during the decrypt may have dropped this version, and a key found disabled
      // meanwhile dropped its values: in either case do not cache it back.
      if (generation === this.#cacheGeneration) this.#cache.set(key, value, now, keyTag, epoch);
      return value;
    } finally {
      this.#deps.metrics.kmsSeconds.observe((performance.now() - t0) / 1000);
    }
  }

  async #seal(binding: Binding, value: Uint8Array, doc: VerifiedDocument, recipient: RecipientKey, now: number): Promise<ReleasedSecret> {
    const claims: ReleaseClaims = buildReleaseClaims({
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
    const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
      .setProtectedHeader({ alg: 'EdDSA', kid: this.#deps.signingKey.kid, typ: 'keygate-release+jws' })
      .sign(this.#deps.signingKey.privateKey);
    const jwe = await new CompactEncrypt(new TextEncoder().encode(jws))
      .setProtectedHeader({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: 'keygate-release+jws', kid: binding.secret })
      .encrypt(recipient);
    return { name: binding.secret, version: binding.version, ttlSeconds: binding.ttlSeconds, jwe };
  }
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
