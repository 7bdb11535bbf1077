/** The claims of a kms-recipient release: `cms` instead of `val`, bound exactly like a value (see protocol-claims.test.ts). */
import { describe, expect, it } from 'vitest';
import { buildRecipientReleaseClaims, buildReleaseClaims, checkReleaseClaims } from '../../broker/protocol/index.js';
import { claimsExpectation, claimsInput } from '../support/claims.js';

const input = claimsInput(Uint8Array.of(0x30, 0x80, 1, 2, 3));
const expectation = claimsExpectation;

describe('recipient release claims', () => {
  it('carry the recipient ciphertext as cms, no val, with the same binding claims; the agent accepts them', () => {
    const claims = buildRecipientReleaseClaims(input);
    const { val: _val, ...common } = buildReleaseClaims(input);
    expect(claims).toEqual({ ...common, cms: Buffer.from(input.value).toString('base64url') });
    expect('val' in claims).toBe(false);
    expect(checkReleaseClaims(JSON.parse(JSON.stringify(claims)), expectation())).toEqual({ ok: true, claims });
  });

  it('are bound like any release: another document, nonce or enclave is UNTRUSTED_RESPONSE', () => {
    const claims = buildRecipientReleaseClaims(input);
    expect(checkReleaseClaims(claims, expectation({ documentSha256: 'ef'.repeat(32) }))).toMatchObject({ ok: false, code: 'UNTRUSTED_RESPONSE' });
    expect(checkReleaseClaims(claims, expectation({ nonceHex: '00'.repeat(32) }))).toMatchObject({ ok: false, code: 'UNTRUSTED_RESPONSE' });
    expect(checkReleaseClaims(claims, expectation({ moduleId: 'i-0fedcba9876543210-enc0' }))).toMatchObject({ ok: false, code: 'UNTRUSTED_RESPONSE' });
  });

  it.each([
    ['both val and cms', { val: 'AAAA', cms: 'AAAA' }],
    ['neither val nor cms', { val: undefined, cms: undefined }],
    ['an empty cms', { cms: '' }],
    ['a cms that is not base64url', { cms: 'a+b/' }],
    ['a cms that is not a string', { cms: 42 }],
  ])('refuse %s: BAD_RESPONSE', (_what, over) => {
    const claims = { ...buildRecipientReleaseClaims(input), ...over };
    expect(checkReleaseClaims(JSON.parse(JSON.stringify(claims)), expectation())).toMatchObject({ ok: false, code: 'BAD_RESPONSE' });
  });
});
