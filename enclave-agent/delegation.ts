import { compactVerify, decodeProtectedHeader, type importJWK } from 'jose';
import {
  CHALLENGE_NONCE_BYTES,
  DELEGATION_JWS_TYPE,
  isBrokerErrorCode,
  isDelegationAudience,
  parseDelegationClaims,
  type AttestationSummary,
  type ChallengeAnswer,
  type DelegationAnswer,
  type DelegationAudience,
  type DelegationClaims,
  type ErrorAnswer,
  type MeasurementValues,
} from '../broker/protocol/index.js';
import type { Nsm } from '../vsock-shim/nsm/client.js';
import { NsmError } from '../vsock-shim/nsm/messages.js';
import { AgentError } from './errors.js';
import type { BrokerHttp } from './http.js';
import { sentDocument } from './document.js';

type BrokerKey = Awaited<ReturnType<typeof importJWK>>;

/** What a parent asks for: a strict subset of what it may read, for less time, for one audience. */
export interface DelegateOptions {
  readonly names: readonly string[];
  /** Seconds; at most the names' binding TTLs and the broker's delegation.maxTtlSeconds. */
  readonly ttl: number;
  /** The sub-agent's measurements (PCR0/1/2, optionally 3/4/8, as lower-case hex by index) or an approved baseline's name. */
  readonly audience: DelegationAudience;
  readonly maxUses: number;
}

/** A delegation the broker issued to this agent, checked against the request that asked for it. */
export interface Delegation {
  /** The token to hand to the sub-agent (it passes it as `createAgent({ delegation })`). */
  readonly token: string;
  readonly id: string;
  /** Seconds since the epoch. */
  readonly exp: number;
  readonly claims: DelegationClaims;
}

/** Who delegated to a sub-agent, as the broker attested and signed it. */
export interface DelegationParent {
  readonly id: string;
  readonly names: readonly string[];
  /** Seconds since the epoch. */
  readonly exp: number;
  readonly maxUses: number;
  readonly depth: number;
  /** The immediate parent (the enclave that asked for this token). */
  readonly parent: AttestationSummary;
  /** Every identity above the sub-agent, root first (chain[0]'s policy grants the names). */
  readonly chain: readonly AttestationSummary[];
}

/** A broker's error answer as an AgentError: only the broker's own codes pass (the body is unauthenticated). */
function brokerError(res: { status: number; json: unknown }, what: string): AgentError {
  const err = (res.json as { error?: { [K in keyof ErrorAnswer['error']]?: unknown } } | null)?.error;
  if (!isBrokerErrorCode(err?.code)) return new AgentError('BAD_RESPONSE', `unexpected ${what} answer (HTTP ${res.status})`);
  const message = typeof err.message === 'string' ? err.message.slice(0, 300).replace(/[\u0000-\u001f\u007f]/g, ' ') : `broker refused (${err.code})`;
  return new AgentError(err.code, message);
}

/** The claims of a token signed by the pinned broker key, or UNTRUSTED_RESPONSE. */
export async function verifiedDelegation(token: unknown, brokerKey: BrokerKey): Promise<DelegationClaims> {
  try {
    if (typeof token !== 'string') throw new Error('not a string');
    if (decodeProtectedHeader(token).typ !== DELEGATION_JWS_TYPE) throw new Error('not a delegation token');
    const { payload } = await compactVerify(token, brokerKey, { algorithms: ['EdDSA'] });
    const claims = parseDelegationClaims(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload)) as unknown);
    if (!claims) throw new Error('claims of the wrong shape');
    return claims;
  } catch (cause) {
    throw new AgentError('UNTRUSTED_RESPONSE', 'the delegation token is not signed by the pinned broker key, or is malformed', { cause });
  }
}

/**
 * The delegating parent of a token, verified with the pinned broker key. With `expected`, the
 * immediate parent's measurements must include these (else PARENT_MISMATCH): a sub-agent refuses
 * work from a parent it does not expect.
 */
export async function parentOfToken(token: string, brokerKey: BrokerKey, expected?: { readonly pcrs: MeasurementValues }): Promise<DelegationParent> {
  // Fail closed: an expectation naming no measurement (say, an unset PCR0 in the caller's config) must not mean "any parent".
  const wanted = expected && Object.entries(expected.pcrs ?? {}).filter(([, v]) => v !== undefined);
  if (wanted && (!wanted.length || wanted.some(([, v]) => typeof v !== 'string' || !/^[0-9a-fA-F]+$/.test(v)))) {
    throw new TypeError('parentOf: expected.pcrs must give at least one PCR value, as hex');
  }
  const claims = await verifiedDelegation(token, brokerKey);
  const parent = claims.chain[claims.chain.length - 1]!;
  if (wanted?.some(([i, v]) => !Object.hasOwn(parent.pcrs, i) || parent.pcrs[i] !== v!.toLowerCase())) {
    throw new AgentError('PARENT_MISMATCH', "the delegating parent's measurements are not the expected ones");
  }
  return { id: claims.jti, names: claims.names, exp: claims.exp, maxUses: claims.maxUses, depth: claims.depth, parent, chain: claims.chain };
}

/**
 * Asks the broker for a delegation with a fresh attestation of this agent (and, for a sub-agent, its own
 * delegation), and accepts the token only if the pinned broker key signed it for exactly this request:
 * the last link of its chain is the document just sent, and names, uses and audience are those asked for.
 */
export async function requestDelegation(
  http: BrokerHttp,
  nsm: Nsm,
  spki: Uint8Array,
  brokerKey: BrokerKey,
  options: DelegateOptions,
  presented: string | undefined,
  wallClock: () => number,
  maxClockSkewMs: number,
): Promise<Delegation> {
  if (!Array.isArray(options.names) || options.names.length === 0) throw new TypeError('delegate needs names');
  if (!Number.isSafeInteger(options.ttl) || options.ttl < 1) throw new TypeError('delegate needs ttl: a positive number of seconds');
  if (!Number.isSafeInteger(options.maxUses) || options.maxUses < 1) throw new TypeError('delegate needs maxUses: a positive integer');
  if (!isDelegationAudience(options.audience)) throw new TypeError('delegate needs audience: { pcrs: { 0, 1, 2 } } or { baseline }');
  const startedWall = wallClock();
  const challenge = await http.call('GET', '/v1/challenge');
  const nonceB64 = (challenge.json as { [K in keyof ChallengeAnswer]?: unknown } | null)?.nonce;
  if (challenge.status !== 200 || typeof nonceB64 !== 'string') throw brokerError(challenge, 'challenge');
  const nonce = Buffer.from(nonceB64, 'base64');
  if (nonce.length !== CHALLENGE_NONCE_BYTES) throw new AgentError('BAD_RESPONSE', `broker challenge is not ${CHALLENGE_NONCE_BYTES} bytes`);
  let document: Uint8Array;
  try {
    document = await nsm.attest({ nonce, publicKey: spki });
  } catch (cause) {
    throw new AgentError('NSM_ERROR', `the NSM could not attest: ${cause instanceof NsmError ? cause.message : String(cause)}`, { cause });
  }
  const sent = sentDocument(document);
  const res = await http.call('POST', '/v1/delegations', {
    attestation: Buffer.from(document).toString('base64'),
    names: options.names,
    ttlSeconds: options.ttl,
    audience: options.audience,
    maxUses: options.maxUses,
    ...(presented !== undefined ? { delegation: presented } : {}),
  });
  const answer = res.json as { [K in keyof DelegationAnswer]?: unknown } | null;
  if (res.status !== 200 || typeof answer?.delegation !== 'string') throw brokerError(res, 'delegations');
  const claims = await verifiedDelegation(answer.delegation, brokerKey);
  const last = claims.chain[claims.chain.length - 1]!;
  const same = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((n, i) => n === b[i]);
  if (last.doc !== sent.sha256 || last.moduleId !== sent.moduleId || !same(claims.names, options.names) || claims.maxUses !== options.maxUses || JSON.stringify(claims.aud) !== JSON.stringify(options.audience)) {
    throw new AgentError('UNTRUSTED_RESPONSE', 'the delegation token does not answer the request this agent made');
  }
  // Issued now, for at most what was asked: an old token replayed by a relay is refused.
  if (claims.iat * 1000 < startedWall - maxClockSkewMs - 1000 || claims.iat * 1000 > wallClock() + maxClockSkewMs || claims.exp - claims.iat > options.ttl) {
    throw new AgentError('STALE_RESPONSE', 'the delegation token was not issued for this request on this clock');
  }
  return { token: answer.delegation, id: claims.jti, exp: claims.exp, claims };
}
