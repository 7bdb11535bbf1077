/** The broker <-> enclave claims contract on its own: what the broker builds, the agent accepts; each check's boundary and code. */
import { describe, expect, it } from 'vitest';
import { buildReleaseClaims, checkReleaseClaims, VersionFloor } from '../../broker/protocol/index.js';
import { CLAIMS_T0, claimsExpectation, claimsInput } from '../support/claims.js';

const T0 = CLAIMS_T0;
const input = claimsInput(new TextEncoder().encode('hunter2'));
const expectation = claimsExpectation;

describe('release claims', () => {
  it('the broker builds what the agent accepts: exp = iat + ttl, iat in whole seconds', () => {
    const claims = buildReleaseClaims(input);
    expect(claims).toMatchObject({ iss: 'keygate', sub: 'db-password', ver: 3, iat: Math.floor(T0 / 1000), exp: Math.floor(T0 / 1000) + 60, ttl: 60, aud: input.moduleId });
    const check = checkReleaseClaims(JSON.parse(JSON.stringify(claims)), expectation());
    expect(check).toEqual({ ok: true, claims });
  });

  it('iat: up to the skew (plus the rounded-down second) before the request is accepted, beyond it STALE_RESPONSE', () => {
    const claims = buildReleaseClaims({ ...input, ttlSeconds: 300 }); // still unexpired 61 s after iat
    const startedAt = (claims.iat + 1) * 1000 + 60_000;
    expect(checkReleaseClaims(claims, expectation({ requestStartedAtMs: startedAt, nowMs: startedAt })).ok).toBe(true);
    expect(checkReleaseClaims(claims, expectation({ requestStartedAtMs: startedAt + 1, nowMs: startedAt + 1 }))).toMatchObject({ ok: false, code: 'STALE_RESPONSE' });
  });

  it('iat: up to the skew in the future is accepted, beyond it STALE_RESPONSE', () => {
    const claims = buildReleaseClaims(input);
    const now = claims.iat * 1000 - 60_000;
    expect(checkReleaseClaims(claims, expectation({ requestStartedAtMs: now, nowMs: now })).ok).toBe(true);
    expect(checkReleaseClaims(claims, expectation({ requestStartedAtMs: now - 1, nowMs: now - 1 }))).toMatchObject({ ok: false, code: 'STALE_RESPONSE' });
  });

  it('exp: honoured to the millisecond on the enclave clock (STALE_RESPONSE at exp)', () => {
    const claims = buildReleaseClaims(input);
    expect(checkReleaseClaims(claims, expectation({ nowMs: claims.exp * 1000 - 1 })).ok).toBe(true);
    expect(checkReleaseClaims(claims, expectation({ nowMs: claims.exp * 1000 }))).toMatchObject({ ok: false, code: 'STALE_RESPONSE' });
  });

  it('refuses payloads that are not claim objects, and claims of the wrong type', () => {
    for (const payload of [null, 'x', [], 42]) expect(checkReleaseClaims(payload, expectation())).toMatchObject({ ok: false, code: 'BAD_RESPONSE' });
    const claims = buildReleaseClaims(input);
    expect(checkReleaseClaims({ ...claims, ver: '3' }, expectation({ labelledVersion: '3' }))).toMatchObject({ ok: false, code: 'BAD_RESPONSE' });
    expect(checkReleaseClaims({ ...claims, iat: 1.5 }, expectation())).toMatchObject({ ok: false, code: 'BAD_RESPONSE' });
    expect(checkReleaseClaims({ ...claims, ttl: 86_401, exp: claims.iat + 86_401 }, expectation())).toMatchObject({ ok: false, code: 'BAD_RESPONSE' });
    expect(checkReleaseClaims({ ...claims, val: 'A' }, expectation())).toMatchObject({ ok: false, code: 'BAD_RESPONSE' });
  });
});

describe('VersionFloor', () => {
  it('a validly bound answer of a lower version is refused as VERSION_ROLLBACK once a higher one was accepted', () => {
    const floor = new VersionFloor();
    const v1 = buildReleaseClaims({ ...input, version: 1 });
    const v2 = buildReleaseClaims({ ...input, version: 2 });
    const check1 = checkReleaseClaims(v1, expectation({ labelledVersion: 1 }));
    expect(check1.ok).toBe(true); // bound, fresh, well-formed: only the floor can tell it is a rollback
    expect(floor.check('db-password', 2)).toBeUndefined();
    floor.raise('db-password', v2.ver);
    expect(floor.check('db-password', 1)).toMatchObject({ code: 'VERSION_ROLLBACK' });
    expect(floor.check('db-password', 2)).toBeUndefined(); // the same version again is fine (re-attestation)
    expect(floor.check('other', 1)).toBeUndefined(); // per name
    floor.raise('db-password', 1); // never lowers
    expect(floor.highest('db-password')).toBe(2);
  });
});
