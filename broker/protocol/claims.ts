/**
 * The broker <-> enclave wire contract for a released secret: the claims the
 * broker signs (built here by the broker) and what the enclave agent checks
 * before it believes them (checked here by the agent). One module on both
 * sides, so the two cannot drift apart.
 *
 * No imports at all: the agent ships inside the measured enclave image and
 * may import this module and nothing else of broker/. Only Node globals
 * (Buffer) are used.
 */

/** `typ` of the broker-signed JWS, and `cty` of the JWE around it. */
export const RELEASE_JWS_TYPE = 'keygate-release+jws';
export const RELEASE_ISSUER = 'keygate';
/** Longest TTL a binding may carry (the broker's policy schema enforces the same bound). */
export const MAX_RELEASE_TTL_SECONDS = 86_400;
/** Default tolerance between the broker's clock and the enclave's for `iat`. */
export const DEFAULT_MAX_CLOCK_SKEW_MS = 60_000;

/** The claims inside the broker-signed JWS an enclave receives, whatever the release mode. */
interface ClaimsCommon {
  readonly iss: typeof RELEASE_ISSUER;
  /** The secret's name. */
  readonly sub: string;
  /** The secret's version; never goes backwards for an agent process. */
  readonly ver: number;
  /** The value is UTF-8 text (the agent returns a string). */
  readonly text: boolean;
  /** Seconds since the epoch on the broker's clock; exp = iat + ttl. */
  readonly iat: number;
  readonly exp: number;
  readonly ttl: number;
  /** Hex nonce and hex SHA-256 of the attestation document this answers, and its module_id. */
  readonly nonce: string;
  readonly doc: string;
  readonly aud: string;
}

/** Mode `jwe`: the value itself (the JWE around the JWS keeps it confidential). */
export interface ReleaseClaims extends ClaimsCommon {
  /** base64url of the value. */
  readonly val: string;
}

/**
 * Mode `kms-recipient`: the value as KMS encrypted it to the attested key
 * (Decrypt with Recipient), which the broker never decrypted. No `val`, so an
 * agent that does not know this mode refuses the answer instead of taking it
 * as an empty value.
 */
export interface RecipientReleaseClaims extends ClaimsCommon {
  /** base64url of KMS's CiphertextForRecipient (a BER CMS EnvelopedData). */
  readonly cms: string;
}

/** What an agent may receive signed: exactly one of `val` and `cms`. */
export type SignedReleaseClaims = ReleaseClaims | RecipientReleaseClaims;

/** What the broker knows when it releases one secret to one verified document. */
export interface ReleaseClaimsInput {
  readonly secret: string;
  readonly version: number;
  readonly value: Uint8Array;
  readonly text: boolean;
  readonly ttlSeconds: number;
  /** Broker wall clock, milliseconds. */
  readonly issuedAtMs: number;
  readonly nonceHex: string;
  readonly documentSha256: string;
  readonly moduleId: string;
}

function commonClaims(input: ReleaseClaimsInput): ClaimsCommon {
  const iat = Math.floor(input.issuedAtMs / 1000);
  return {
    iss: RELEASE_ISSUER,
    sub: input.secret,
    ver: input.version,
    text: input.text,
    iat,
    exp: iat + input.ttlSeconds,
    ttl: input.ttlSeconds,
    nonce: input.nonceHex,
    doc: input.documentSha256,
    aud: input.moduleId,
  };
}

/** The claims for one release (broker side). */
export function buildReleaseClaims(input: ReleaseClaimsInput): ReleaseClaims {
  return { ...commonClaims(input), val: Buffer.from(input.value).toString('base64url') };
}

/** The claims for one `kms-recipient` release (broker side): `input.value` is KMS's CiphertextForRecipient, never the value. */
export function buildRecipientReleaseClaims(input: ReleaseClaimsInput): RecipientReleaseClaims {
  return { ...commonClaims(input), cms: Buffer.from(input.value).toString('base64url') };
}

/**
 * Why an answer is refused (agent side):
 * - `UNTRUSTED_RESPONSE`: not an answer to this request: another issuer,
 *   secret, nonce, attestation document (`doc`) or enclave (`aud`), or a
 *   version other than the one the item is labelled with. A replayed or
 *   redirected answer lands here.
 * - `STALE_RESPONSE`: bound to this request but outside its time window on
 *   the enclave's clock (`iat` long before the request or far in the future,
 *   `exp` passed). With a correct binding this means the clocks disagree.
 * - `VERSION_ROLLBACK`: bound and fresh, but older than a version this
 *   process already accepted (a stale replica, or a secret re-created with
 *   its version reset); retrying later may succeed, accepting it would undo
 *   a rotation.
 * - `BAD_RESPONSE`: claims of the wrong shape or inconsistent with each other.
 */
export type AnswerProblemCode = 'UNTRUSTED_RESPONSE' | 'STALE_RESPONSE' | 'VERSION_ROLLBACK' | 'BAD_RESPONSE';

export interface AnswerProblem {
  readonly code: AnswerProblemCode;
  readonly message: string;
}

/** What the agent knows about the request an answer must belong to. */
export interface ReleaseExpectation {
  /** The secret asked for, and the version the (unsigned) item is labelled with. */
  readonly name: string;
  readonly labelledVersion: unknown;
  /** Hex of the nonce the agent put in its document. */
  readonly nonceHex: string;
  /** Hex SHA-256 of the exact document bytes the agent sent, and that document's module_id. */
  readonly documentSha256: string;
  readonly moduleId: string;
  /** Enclave wall clock (ms) when the request began, and now. */
  readonly requestStartedAtMs: number;
  readonly nowMs: number;
  readonly maxClockSkewMs: number;
}

export type ClaimsCheck = { readonly ok: true; readonly claims: SignedReleaseClaims } | ({ readonly ok: false } & AnswerProblem);

const BASE64URL = /^[A-Za-z0-9_-]*$/;
export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isPositiveInteger = (v: unknown, max: number): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && v <= max;
const isSeconds = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/**
 * Checks signed claims (the parsed JWS payload) against the request they
 * must answer. The signature is the caller's job; this decides whether a
 * genuine broker statement is about this request, now.
 */
export function checkReleaseClaims(payload: unknown, expected: ReleaseExpectation): ClaimsCheck {
  const fail = (code: AnswerProblemCode, message: string): ClaimsCheck => ({ ok: false, code, message: `"${expected.name}": ${message}` });
  if (!isObject(payload)) return fail('BAD_RESPONSE', 'the signed claims are not an object');
  const c = payload;

  // Binding first: is this the broker's answer to the document this agent produced for this request?
  if (c.iss !== RELEASE_ISSUER) return fail('UNTRUSTED_RESPONSE', 'the answer is not issued by keygate (iss)');
  if (c.sub !== expected.name) return fail('UNTRUSTED_RESPONSE', 'the answer is for another secret (sub)');
  if (c.doc !== expected.documentSha256) return fail('UNTRUSTED_RESPONSE', 'the answer is bound to another attestation document (doc): replayed or redirected');
  if (c.aud !== expected.moduleId) return fail('UNTRUSTED_RESPONSE', 'the answer is addressed to another enclave (aud)');
  if (c.nonce !== expected.nonceHex) return fail('UNTRUSTED_RESPONSE', 'the answer is for another challenge (nonce)');
  if (!isPositiveInteger(c.ver, Number.MAX_SAFE_INTEGER)) return fail('BAD_RESPONSE', 'the version (ver) is not a positive integer');
  if (c.ver !== expected.labelledVersion) return fail('UNTRUSTED_RESPONSE', 'the signed version (ver) differs from the version the item is labelled with');

  // Time, on the enclave's own wall clock: the answer was issued during this request (give or take the skew) and is not expired.
  if (!isSeconds(c.iat) || !isSeconds(c.exp)) return fail('BAD_RESPONSE', 'iat/exp are not whole seconds');
  const skew = expected.maxClockSkewMs;
  // iat is rounded down to the second by the broker: allow that second on top of the skew.
  if ((c.iat + 1) * 1000 < expected.requestStartedAtMs - skew) return fail('STALE_RESPONSE', `issued ${Math.round((expected.requestStartedAtMs - c.iat * 1000) / 1000)} s before this request began (iat); check that the broker's and the enclave's clocks agree`);
  if (c.iat * 1000 > expected.nowMs + skew) return fail('STALE_RESPONSE', `issued ${Math.round((c.iat * 1000 - expected.nowMs) / 1000)} s in the future (iat); check that the broker's and the enclave's clocks agree`);
  if (c.exp * 1000 <= expected.nowMs) return fail('STALE_RESPONSE', 'the answer has expired (exp); check that the broker\'s and the enclave\'s clocks agree');

  if (!isPositiveInteger(c.ttl, MAX_RELEASE_TTL_SECONDS)) return fail('BAD_RESPONSE', `ttl is not a whole number of seconds in 1..${MAX_RELEASE_TTL_SECONDS}`);
  if (c.exp !== c.iat + c.ttl) return fail('BAD_RESPONSE', 'exp is not iat + ttl');
  const isB64 = (v: unknown): v is string => typeof v === 'string' && BASE64URL.test(v) && v.length % 4 !== 1;
  // Exactly one of the value (mode jwe) and KMS's recipient ciphertext (mode kms-recipient).
  if ((c.val === undefined) === (c.cms === undefined)) return fail('BAD_RESPONSE', 'the answer carries neither or both of a value (val) and a recipient ciphertext (cms)');
  if (c.val !== undefined && !isB64(c.val)) return fail('BAD_RESPONSE', 'the value (val) is not base64url');
  if (c.cms !== undefined && (!isB64(c.cms) || c.cms === '')) return fail('BAD_RESPONSE', 'the recipient ciphertext (cms) is not non-empty base64url');
  if (typeof c.text !== 'boolean') return fail('BAD_RESPONSE', 'text is not a boolean');
  const common = { iss: RELEASE_ISSUER, sub: expected.name, ver: c.ver, text: c.text, iat: c.iat, exp: c.exp, ttl: c.ttl, nonce: expected.nonceHex, doc: expected.documentSha256, aud: expected.moduleId } as const;
  const claims: SignedReleaseClaims = isB64(c.val) ? { ...common, val: c.val } : { ...common, cms: c.cms as string };
  return { ok: true, claims };
}

/**
 * The highest version accepted so far, per secret name: a version never goes
 * backwards. Check before accepting, raise once accepted (synchronously after
 * the check, so no interleaving slips a lower version in between).
 */
export class VersionFloor {
  readonly #highest = new Map<string, number>();

  check(name: string, version: number): AnswerProblem | undefined {
    const highest = this.#highest.get(name);
    if (highest !== undefined && version < highest) {
      return { code: 'VERSION_ROLLBACK', message: `"${name}": version ${version} is older than version ${highest} already accepted (rollback refused)` };
    }
    return undefined;
  }

  raise(name: string, version: number): void {
    if (version > (this.#highest.get(name) ?? 0)) this.#highest.set(name, version);
  }

  highest(name: string): number | undefined {
    return this.#highest.get(name);
  }
}
