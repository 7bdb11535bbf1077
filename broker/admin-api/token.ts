import { createPublicKey, type KeyObject } from 'node:crypto';
import type { JWTPayload, ProtectedHeaderParameters } from 'jose';
import { CodedError } from '../../lib/coded-error.js';
import type { NonceRegistry } from '../nonce/registry.js';
import { NonceRegistryUnavailableError } from '../nonce/registry.js';

/**
 * Admin API tokens: short-lived JWTs signed by a configured admin API key.
 * Checked here, before any route runs: the signature (EdDSA or ES256 only,
 * by a key named by its thumbprint in `kid`), `typ`, `aud`, `iat`/`exp`
 * (lifetime at most MAX_TOKEN_LIFETIME_S), the scope, and single use of `jti`.
 */

/** The scopes an admin token may carry (space-separated in its `scope` claim). */
export const ADMIN_SCOPES = ['secrets:read', 'secrets:write', 'revocations:write', 'baselines:approve', 'audit:read'] as const;
export type AdminScope = (typeof ADMIN_SCOPES)[number];

/** The `typ` header of an admin token: a JWT minted for another purpose (an ID token) is not one. */
export const ADMIN_TOKEN_TYPE = 'keygate-admin+jwt';

/** Longest lifetime (exp - iat) accepted. */
export const MAX_TOKEN_LIFETIME_S = 300;

/** Clock skew allowed between the minting machine and the broker. */
export const CLOCK_TOLERANCE_S = 30;

const ALGORITHMS = ['EdDSA', 'ES256'];

/**
 * Why a token was refused: `UNAUTHORIZED` (no valid token; `reason` says which check failed),
 * `FORBIDDEN` (a valid token without the operation's scope), `UNAVAILABLE` (the replay cache
 * cannot answer: fail closed).
 */
export type AdminAuthCode = 'UNAUTHORIZED' | 'FORBIDDEN' | 'UNAVAILABLE';

export type TokenRefusal =
  | 'TOKEN_MISSING'
  | 'TOKEN_MALFORMED'
  | 'TOKEN_ALG'
  | 'TOKEN_UNKNOWN_KEY'
  | 'TOKEN_SIGNATURE'
  | 'TOKEN_TYPE'
  | 'TOKEN_AUDIENCE'
  | 'TOKEN_EXPIRED'
  | 'TOKEN_NOT_YET_VALID'
  | 'TOKEN_LIFETIME'
  | 'TOKEN_CLAIMS'
  | 'TOKEN_REPLAYED'
  | 'SCOPE_MISSING'
  | 'REPLAY_CACHE_UNAVAILABLE';

export class AdminAuthError extends CodedError<AdminAuthCode> {
  override readonly name = 'AdminAuthError';
  readonly reason: TokenRefusal;
  constructor(code: AdminAuthCode, reason: TokenRefusal, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.reason = reason;
  }
}

/** An admin API key as the broker holds it: the public key and its RFC 7638 thumbprint. */
export interface AdminApiKey {
  readonly kid: string;
  readonly key: KeyObject;
}

/** The key id of an admin key: its RFC 7638 SHA-256 thumbprint (what `kid` must name). */
/** jose loads on first use: the CLI's store commands import this module for its scopes and option lists (start-up, issue 15). */
const jose = (): Promise<typeof import('jose')> => import('jose');

export async function adminKeyId(key: KeyObject): Promise<string> {
  const { calculateJwkThumbprint, exportJWK } = await jose();
  return calculateJwkThumbprint(await exportJWK(key.type === 'private' ? createPublicKey(key) : key), 'sha256');
}

/** Checks the key type (Ed25519 or P-256) and computes its kid. */
export async function adminApiKey(key: KeyObject, what = 'admin API key'): Promise<AdminApiKey> {
  const ok = key.asymmetricKeyType === 'ed25519' || (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1');
  if (!ok) throw new Error(`${what}: expected an Ed25519 or P-256 key, got ${key.asymmetricKeyType ?? key.type}`);
  return { kid: await adminKeyId(key), key };
}

/** What a verified token grants. */
export interface AdminPrincipal {
  readonly kid: string;
  readonly jti: string;
  readonly scopes: readonly string[];
}

export interface TokenCheck {
  readonly keys: readonly AdminApiKey[];
  readonly audience: string;
  /** Epoch ms. */
  readonly now: number;
  readonly replay: NonceRegistry;
}

const JTI = /^[\x21-\x7e]{8,128}$/;

function refuse(reason: TokenRefusal, message: string, cause?: unknown): AdminAuthError {
  return new AdminAuthError('UNAUTHORIZED', reason, message, cause === undefined ? undefined : { cause });
}

/** Reads `Authorization: Bearer <jwt>`. */
export function bearerToken(header: string | undefined): string {
  const m = /^Bearer ([A-Za-z0-9_.-]{1,8192})$/.exec(header ?? '');
  if (!m) throw refuse('TOKEN_MISSING', 'an admin token is required: Authorization: Bearer <jwt>');
  return m[1]!;
}

/**
 * Verifies `token` and consumes its jti. Does not check a scope (see requireScope).
 *
 * @throws AdminAuthError
 */
export async function verifyAdminToken(token: string, check: TokenCheck): Promise<AdminPrincipal> {
  const { decodeProtectedHeader, jwtVerify, errors: joseErrors } = await jose();
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch (err) {
    throw refuse('TOKEN_MALFORMED', 'the admin token is not a JWS', err);
  }
  if (token.split('.').length !== 3) throw refuse('TOKEN_MALFORMED', 'the admin token is not a compact JWS');
  if (typeof header.alg !== 'string' || !ALGORITHMS.includes(header.alg)) throw refuse('TOKEN_ALG', `admin tokens are signed with EdDSA or ES256, not ${JSON.stringify(header.alg)}`);
  if (header.typ !== ADMIN_TOKEN_TYPE) throw refuse('TOKEN_TYPE', `admin tokens carry typ "${ADMIN_TOKEN_TYPE}"`);
  const key = check.keys.find((k) => k.kid === header.kid);
  if (!key) throw refuse('TOKEN_UNKNOWN_KEY', 'the admin token is not signed by a configured admin API key (kid: the key\'s RFC 7638 thumbprint)');
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, key.key, {
      algorithms: ALGORITHMS,
      typ: ADMIN_TOKEN_TYPE,
      audience: check.audience,
      currentDate: new Date(check.now),
      clockTolerance: CLOCK_TOLERANCE_S,
      requiredClaims: ['iat', 'exp', 'jti', 'aud'],
    }));
  } catch (err) {
    if (err instanceof joseErrors.JWTExpired) throw refuse('TOKEN_EXPIRED', 'the admin token has expired', err);
    if (err instanceof joseErrors.JWSSignatureVerificationFailed) throw refuse('TOKEN_SIGNATURE', 'the admin token signature does not verify', err);
    if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud') throw refuse('TOKEN_AUDIENCE', `the admin token is not for this broker (aud must be "${check.audience}")`, err);
    if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'nbf') throw refuse('TOKEN_NOT_YET_VALID', 'the admin token is not valid yet', err);
    if (err instanceof joseErrors.JOSEAlgNotAllowed) throw refuse('TOKEN_ALG', 'admin tokens are signed with EdDSA or ES256', err);
    if (err instanceof joseErrors.JWTClaimValidationFailed) throw refuse('TOKEN_CLAIMS', `the admin token's ${err.claim} claim is missing or invalid`, err);
    throw refuse('TOKEN_MALFORMED', 'the admin token cannot be verified', err);
  }
  const { iat, exp, jti, scope } = payload as { iat: number; exp: number; jti: unknown; scope?: unknown };
  if (iat * 1000 > check.now + CLOCK_TOLERANCE_S * 1000) throw refuse('TOKEN_NOT_YET_VALID', 'the admin token was issued in the future (check the clocks)');
  if (exp - iat > MAX_TOKEN_LIFETIME_S) throw refuse('TOKEN_LIFETIME', `admin tokens live at most ${MAX_TOKEN_LIFETIME_S} s (exp - iat)`);
  if (typeof jti !== 'string' || !JTI.test(jti)) throw refuse('TOKEN_CLAIMS', 'the admin token\'s jti must be 8-128 printable characters');
  if (typeof scope !== 'string' || scope.length > 1000) throw refuse('TOKEN_CLAIMS', 'the admin token\'s scope claim must be a space-separated string');
  let use;
  try {
    // Namespaced by key: challenge nonces share the registry. Remembered until no broker accepts the token.
    use = await check.replay.consume(`admin-jti:${key.kid}:${jti}`, (exp + CLOCK_TOLERANCE_S) * 1000, check.now);
  } catch (err) {
    if (err instanceof NonceRegistryUnavailableError) throw new AdminAuthError('UNAVAILABLE', 'REPLAY_CACHE_UNAVAILABLE', 'the replay cache cannot answer; nothing was done', { cause: err });
    throw err;
  }
  if (use === 'used') throw refuse('TOKEN_REPLAYED', 'the admin token was already used (jti is single use)');
  if (use === 'busy') throw new AdminAuthError('UNAVAILABLE', 'REPLAY_CACHE_UNAVAILABLE', 'the replay cache is full; retry shortly');
  return { kid: key.kid, jti, scopes: scope.split(' ').filter(Boolean) };
}

/** @throws AdminAuthError FORBIDDEN when the token lacks `scope`. */
export function requireScope(principal: AdminPrincipal, scope: AdminScope): void {
  if (!principal.scopes.includes(scope)) throw new AdminAuthError('FORBIDDEN', 'SCOPE_MISSING', `this operation needs scope ${scope}`);
}

export interface MintRequest {
  readonly key: KeyObject;
  readonly scopes: readonly AdminScope[];
  readonly audience: string;
  readonly ttlSeconds: number;
  /** Epoch ms. */
  readonly now: number;
  readonly jti: string;
}

/** Mints an admin token (`keygate admin token`). */
export async function mintAdminToken(req: MintRequest): Promise<string> {
  if (!(req.ttlSeconds > 0 && req.ttlSeconds <= MAX_TOKEN_LIFETIME_S)) throw new Error(`the token lifetime must be 1..${MAX_TOKEN_LIFETIME_S} s`);
  const { kid } = await adminApiKey(req.key, 'the signing key');
  const alg = req.key.asymmetricKeyType === 'ed25519' ? 'EdDSA' : 'ES256';
  const iat = Math.floor(req.now / 1000);
  const { SignJWT } = await jose();
  return new SignJWT({ scope: req.scopes.join(' ') })
    .setProtectedHeader({ alg, kid, typ: ADMIN_TOKEN_TYPE })
    .setAudience(req.audience)
    .setIssuedAt(iat)
    .setExpirationTime(iat + Math.round(req.ttlSeconds))
    .setJti(req.jti)
    .sign(req.key);
}
