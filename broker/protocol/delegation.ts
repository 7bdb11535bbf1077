/**
 * The wire contract of a delegation token: the claims the broker signs when an
 * attested parent delegates part of what it may read to a sub-agent, and the
 * shape check both sides run before believing them. The broker checks the
 * token's meaning (chain, uses, policy) itself; the agent uses `parseDelegationClaims`
 * to show a sub-agent who delegated to it (`agent.parentOf`).
 *
 * No imports (see claims.ts): the agent may import this module.
 */

/** `typ` of the broker-signed delegation JWS (EdDSA, the broker's signing key). */
export const DELEGATION_JWS_TYPE = 'keygate-delegation+jws';
export const DELEGATION_VERSION = 1;
/** Longest chain the wire format accepts (the broker's configured maxDepth is at most this). */
export const MAX_DELEGATION_DEPTH = 8;
/** At most this many names in one delegation (as in one release request). */
export const MAX_DELEGATION_NAMES = 32;
/** The PCRs an attestation summary keeps: image (0, 1, 2, 8), IAM role (3), instance (4): what a policy may check. */
export const SUMMARY_PCRS = [0, 1, 2, 3, 4, 8] as const;

/**
 * Measurement index -> lower-case hex: the shape of lib/pcrs.ts PcrValues, spelled here because
 * broker/protocol imports nothing (JSON-identical; the broker fills it with pcrsFromDocument).
 */
export type MeasurementValues = { readonly [index: string]: string | undefined };

/** What the broker saw of one attested enclave in the chain (from its verified document). */
export interface AttestationSummary {
  readonly moduleId: string;
  /** Hex PCR values by index (those of SUMMARY_PCRS the document carried). */
  readonly pcrs: MeasurementValues;
  /** The document was a debug enclave's (PCR0/1/2 all zero). */
  readonly debug: boolean;
  /** Hex SHA-256 of the attestation document. */
  readonly doc: string;
  /** The document's timestamp (ms). */
  readonly at: number;
}

/** Who may present the token: an enclave whose PCRs include these, or whose image is an approved baseline. */
export type DelegationAudience = { readonly pcrs: MeasurementValues } | { readonly baseline: string };

/** The claims inside a delegation token. */
export interface DelegationClaims {
  readonly v: typeof DELEGATION_VERSION;
  readonly iss: 'keygate';
  /** The delegation's id (what `keygate revoke --delegation` names). */
  readonly jti: string;
  /** Seconds since the epoch on the broker's clock. */
  readonly iat: number;
  readonly exp: number;
  readonly names: readonly string[];
  readonly maxUses: number;
  readonly aud: DelegationAudience;
  /** 1: issued to an attested parent on its own authority; n: the n-th link of a chain. */
  readonly depth: number;
  /**
   * Every attested identity above the audience, root first: chain[0] is the parent whose policy grants
   * the names; chain[depth-1] is the one that asked for this token (the sub-agent's immediate parent).
   */
  readonly chain: readonly AttestationSummary[];
  /** Ids of the delegations this one was derived from, root first (length depth - 1). */
  readonly parents: readonly string[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const HEX = /^[0-9a-f]+$/;
/** A measurement of any bank Nitro uses (SHA-256/384/512): hex of 32, 48 or 64 bytes. */
const isMeasurement = (v: unknown): boolean => typeof v === 'string' && HEX.test(v) && [64, 96, 128].includes(v.length);
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ID = /^[A-Za-z0-9_-]{16,64}$/;
const BASELINE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const SUMMARY_INDEXES: ReadonlySet<string> = new Set(SUMMARY_PCRS.map(String));
const uint = (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= max;

function measurementMap(v: unknown, required: readonly string[]): v is MeasurementValues {
  if (!isObject(v)) return false;
  const keys = Object.keys(v);
  if (!keys.length || keys.some((k) => !SUMMARY_INDEXES.has(k) || !isMeasurement(v[k]))) return false;
  return required.every((k) => keys.includes(k));
}

function summary(v: unknown): v is AttestationSummary {
  if (!isObject(v) || Object.keys(v).length !== 5) return false;
  return typeof v.moduleId === 'string' && v.moduleId.length > 0 && v.moduleId.length <= 256 && measurementMap(v.pcrs, ['0', '1', '2']) && typeof v.debug === 'boolean' && typeof v.doc === 'string' && v.doc.length === 64 && HEX.test(v.doc) && uint(v.at);
}

/** The audience as the wire carries it: PCR0/1/2 (optionally 3/4/8) or an approved baseline's name. */
export function isDelegationAudience(v: unknown): v is DelegationAudience {
  if (!isObject(v) || Object.keys(v).length !== 1) return false;
  if (Object.hasOwn(v, 'baseline')) return typeof v.baseline === 'string' && BASELINE.test(v.baseline);
  return measurementMap(v.pcrs, ['0', '1', '2']);
}

/**
 * The claims, if `payload` has exactly the shape of delegation claims (every field, nothing more);
 * undefined otherwise. Shape only: signature, time, chain and uses are the caller's to check.
 */
export function parseDelegationClaims(payload: unknown): DelegationClaims | undefined {
  if (!isObject(payload)) return undefined;
  const p = payload;
  const keys = ['v', 'iss', 'jti', 'iat', 'exp', 'names', 'maxUses', 'aud', 'depth', 'chain', 'parents'];
  if (Object.keys(p).length !== keys.length || !keys.every((k) => k in p)) return undefined;
  if (p.v !== DELEGATION_VERSION || p.iss !== 'keygate' || typeof p.jti !== 'string' || !ID.test(p.jti)) return undefined;
  if (!uint(p.iat) || !uint(p.exp) || p.exp <= p.iat) return undefined;
  if (!Array.isArray(p.names) || p.names.length < 1 || p.names.length > MAX_DELEGATION_NAMES || p.names.some((n) => typeof n !== 'string' || !NAME.test(n))) return undefined;
  if (new Set(p.names).size !== p.names.length) return undefined;
  if (!uint(p.maxUses, 1_000_000) || p.maxUses < 1 || !isDelegationAudience(p.aud)) return undefined;
  if (!uint(p.depth, MAX_DELEGATION_DEPTH) || p.depth < 1) return undefined;
  if (!Array.isArray(p.chain) || p.chain.length !== p.depth || !p.chain.every(summary)) return undefined;
  if (!Array.isArray(p.parents) || p.parents.length !== p.depth - 1 || p.parents.some((id) => typeof id !== 'string' || !ID.test(id))) return undefined;
  return p as unknown as DelegationClaims;
}

/** The body of a successful `POST /v1/delegations`. */
export interface DelegationAnswer {
  /** The compact JWS (typ DELEGATION_JWS_TYPE) to hand to the sub-agent. */
  readonly delegation: string;
  readonly id: string;
  /** Seconds since the epoch. */
  readonly exp: number;
}
