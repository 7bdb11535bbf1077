/**
 * `parentOf` (issue 14) under review: an expectation that names no measurement (an unset PCR0 in the
 * caller's config, `{}`) must not accept every parent; it is refused as a programming error instead.
 */
import { describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { CompactSign, exportJWK, importJWK } from 'jose';
import { parentOfToken } from '../../enclave-agent/delegation.js';
import { DELEGATION_JWS_TYPE, type DelegationClaims } from '../../broker/protocol/index.js';
import { h } from '../support/enclave.js';

const PARENT = { 0: h(0x11), 1: h(0x22), 2: h(0x33) };

async function signedToken(): Promise<{ token: string; brokerKey: Awaited<ReturnType<typeof importJWK>> }> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const now = Math.floor(Date.now() / 1000);
  const claims: DelegationClaims = {
    v: 1,
    iss: 'keygate',
    jti: 'A'.repeat(22),
    iat: now,
    exp: now + 60,
    names: ['db'],
    maxUses: 1,
    aud: { pcrs: { 0: h(0x44), 1: h(0x22), 2: h(0x33) } },
    depth: 1,
    chain: [{ moduleId: 'i-0123456789abcdef0-enc0000000000000001', pcrs: PARENT, debug: false, doc: 'ab'.repeat(32), at: now * 1000 }],
    parents: [],
  };
  const token = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: 'EdDSA', typ: DELEGATION_JWS_TYPE }).sign(privateKey);
  return { token, brokerKey: await importJWK(await exportJWK(publicKey), 'EdDSA') };
}

describe('parentOf with an expectation', () => {
  it('accepts the expected parent and refuses another (PARENT_MISMATCH)', async () => {
    const { token, brokerKey } = await signedToken();
    await expect(parentOfToken(token, brokerKey, { pcrs: { 0: PARENT[0] } })).resolves.toMatchObject({ parent: { pcrs: { 0: PARENT[0] } } });
    await expect(parentOfToken(token, brokerKey, { pcrs: { 0: h(0x55) } })).rejects.toMatchObject({ code: 'PARENT_MISMATCH' });
  });

  it('an expectation naming no measurement (unset or empty) is refused, never "any parent" (TypeError)', async () => {
    const { token, brokerKey } = await signedToken();
    const unset: string | undefined = undefined;
    for (const expected of [{ pcrs: {} }, { pcrs: { 0: unset } }, { pcrs: { 0: 7 as unknown as string } }, { pcrs: { 0: 'not-hex' } }]) {
      await expect(parentOfToken(token, brokerKey, expected), JSON.stringify(expected)).rejects.toThrow(TypeError);
    }
  });
});
