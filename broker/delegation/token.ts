import { CompactSign, compactVerify, decodeProtectedHeader } from 'jose';
import { DELEGATION_JWS_TYPE, parseDelegationClaims, type DelegationClaims } from '../protocol/index.js';
import type { SigningKey } from '../signing-key.js';

/** Longest token accepted (a chain of MAX_DELEGATION_DEPTH summaries and 32 names fits well inside). */
export const MAX_TOKEN_CHARS = 16 * 1024;

/** Signs delegation claims with the broker key (EdDSA), typ DELEGATION_JWS_TYPE. */
export async function signDelegation(claims: DelegationClaims, key: SigningKey): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: 'EdDSA', kid: key.kid, typ: DELEGATION_JWS_TYPE }).sign(key.privateKey);
}

/**
 * The claims of a token this broker signed, or a reason it is not one: not a compact JWS, another
 * type, another key, a bad signature (forged or altered), or claims of the wrong shape. Time, uses and
 * the chain are checked by the caller.
 */
export async function readDelegation(token: unknown, key: SigningKey): Promise<{ ok: true; claims: DelegationClaims } | { ok: false; reason: string }> {
  if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/.test(token)) {
    return { ok: false, reason: 'not a compact JWS' };
  }
  try {
    const header = decodeProtectedHeader(token);
    if (header.typ !== DELEGATION_JWS_TYPE || header.kid !== key.kid) return { ok: false, reason: 'not a delegation of this broker key' };
    const { payload } = await compactVerify(token, key.publicKey, { algorithms: ['EdDSA'] });
    const claims = parseDelegationClaims(JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload)) as unknown);
    return claims ? { ok: true, claims } : { ok: false, reason: 'claims of the wrong shape' };
  } catch {
    return { ok: false, reason: 'signature does not verify' };
  }
}
