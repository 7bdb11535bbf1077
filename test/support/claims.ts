/** A release's claims input and the agent's matching expectation, shared by the claims contract tests. */
import type { ReleaseExpectation } from '../../broker/protocol/index.js';

export const CLAIMS_T0 = Date.UTC(2030, 0, 1, 12, 0, 0, 250);

/** What the broker builds claims from (value bytes given by the caller). */
export function claimsInput(value: Uint8Array) {
  return {
    secret: 'db-password',
    version: 3,
    value,
    text: true,
    ttlSeconds: 60,
    issuedAtMs: CLAIMS_T0,
    nonceHex: 'ab'.repeat(32),
    documentSha256: 'cd'.repeat(32),
    moduleId: 'i-0123456789abcdef0-enc0123456789abcd',
  };
}

/** The agent's expectation for `claimsInput`, with overrides. */
export function claimsExpectation(over: Partial<ReleaseExpectation> = {}): ReleaseExpectation {
  const input = claimsInput(new Uint8Array());
  return {
    name: input.secret,
    labelledVersion: input.version,
    nonceHex: input.nonceHex,
    documentSha256: input.documentSha256,
    moduleId: input.moduleId,
    requestStartedAtMs: CLAIMS_T0 - 100,
    nowMs: CLAIMS_T0 + 100,
    maxClockSkewMs: 60_000,
    ...over,
  };
}
