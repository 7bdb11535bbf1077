import { createHash, createPublicKey, randomUUID, type KeyObject } from 'node:crypto';
import { jwtVerify, SignJWT, type JWK } from 'jose';
import { GATEWAY_TOKEN_AUDIENCE, GATEWAY_TOKEN_TYPE } from '../protocol/index.js';
import type { EnclaveIdentity } from '../policy/decide.js';
import { BINDABLE_PCRS } from '../policy/types.js';
import type { SigningKey } from '../signing-key.js';
import { CodedError } from '../../lib/coded-error.js';
import { PCR_HEX, type PcrValues } from '../../lib/pcrs.js';

const ISSUER = 'keygate';

/** What a gateway token says, once verified. */
export interface GatewayToken {
  readonly jti: string;
  /** The credential (inject binding) it is for. */
  readonly name: string;
  /** The attested identity the policy is re-checked against on every call. */
  readonly identity: EnclaveIdentity;
  /** SHA-256 of the attestation document it was issued for (audit). */
  readonly docSha256: string;
  /** The attested key (`cnf.jwk`): the connection must be bound to it. */
  readonly key: KeyObject;
  /** A digest of the key, for the per-connection binding cache. */
  readonly keyId: string;
  readonly expiresAt: number;
}

/** A broker-signed token for `name`, bound to the attested RSA key `spki` (RFC 7800 `cnf.jwk`). */
export async function issueGatewayToken(
  signingKey: SigningKey,
  input: { readonly name: string; readonly identity: EnclaveIdentity; readonly docSha256: string; readonly spki: Uint8Array; readonly ttlSeconds: number; readonly now: number },
): Promise<string> {
  const jwk = createPublicKey({ key: Buffer.from(input.spki), format: 'der', type: 'spki' }).export({ format: 'jwk' }) as JWK;
  // Only the PCRs a binding can pin: the token stays small and the policy sees what it needs.
  const pcrs = Object.fromEntries(BINDABLE_PCRS.flatMap((i) => (input.identity.pcrs[i] === undefined ? [] : [[String(i), input.identity.pcrs[i]]])));
  const iat = Math.floor(input.now / 1000);
  return new SignJWT({ mid: input.identity.moduleId, pcrs, dbg: input.identity.debug, doc: input.docSha256, cnf: { jwk: { kty: jwk.kty, n: jwk.n, e: jwk.e } } })
    .setProtectedHeader({ alg: 'EdDSA', kid: signingKey.kid, typ: GATEWAY_TOKEN_TYPE })
    .setIssuer(ISSUER)
    .setAudience(GATEWAY_TOKEN_AUDIENCE)
    .setSubject(input.name)
    .setJti(randomUUID())
    .setIssuedAt(iat)
    .setExpirationTime(iat + input.ttlSeconds)
    .sign(signingKey.privateKey);
}

/** Why a token was refused (audited; the caller sees GATEWAY_TOKEN_INVALID). */
export class GatewayTokenError extends CodedError<'GATEWAY_TOKEN_INVALID'> {
  override readonly name = 'GatewayTokenError';
  constructor(readonly reason: string) {
    super('GATEWAY_TOKEN_INVALID', reason);
  }
}

/**
 * Verifies a gateway token at `now`: the broker's signature, type, issuer, audience and expiry, then the
 * shape of every claim (shape before meaning).
 *
 * @throws GatewayTokenError
 */
export async function verifyGatewayToken(token: string, publicKey: KeyObject, now: number): Promise<GatewayToken> {
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token, publicKey, { algorithms: ['EdDSA'], typ: GATEWAY_TOKEN_TYPE, issuer: ISSUER, audience: GATEWAY_TOKEN_AUDIENCE, currentDate: new Date(now), requiredClaims: ['exp', 'iat', 'jti', 'sub'] }));
  } catch (err) {
    throw new GatewayTokenError(`TOKEN_${(err as { code?: string }).code ?? 'INVALID'}`);
  }
  const cnf = payload.cnf as { jwk?: { kty?: unknown; n?: unknown; e?: unknown } } | undefined;
  const pcrs = payload.pcrs as Record<string, unknown> | undefined;
  if (
    typeof payload.mid !== 'string' || typeof payload.dbg !== 'boolean' || typeof payload.doc !== 'string' || typeof pcrs !== 'object' || pcrs === null ||
    !Object.values(pcrs).every((v) => typeof v === 'string' && PCR_HEX.test(v)) || cnf?.jwk?.kty !== 'RSA' || typeof cnf.jwk.n !== 'string' || typeof cnf.jwk.e !== 'string'
  ) {
    throw new GatewayTokenError('TOKEN_MALFORMED');
  }
  const key = createPublicKey({ key: { kty: 'RSA', n: cnf.jwk.n, e: cnf.jwk.e }, format: 'jwk' });
  return {
    jti: payload.jti as string,
    name: payload.sub as string,
    identity: { moduleId: payload.mid, pcrs: pcrs as PcrValues, debug: payload.dbg },
    docSha256: payload.doc,
    key,
    keyId: createHash('sha256').update(`${cnf.jwk.e}.${cnf.jwk.n}`).digest('base64url'),
    expiresAt: (payload.exp as number) * 1000,
  };
}
