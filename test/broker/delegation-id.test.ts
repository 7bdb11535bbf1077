/**
 * Delegation ids are typed on a command line (`keygate revoke --delegation ID`): one that started with "-"
 * (1 in 64 of bare base64url ids) was taken for a flag, so revoking it failed.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { DELEGATION_ID, newDelegationId } from '../../broker/delegation/registry.js';

describe('delegation ids', () => {
  it('never start with "-", whatever the random bytes (0xf8 is the byte base64url writes as "-")', () => {
    const id = newDelegationId(Buffer.alloc(16, 0xf8));
    expect(id.startsWith('-')).toBe(false);
    expect(DELEGATION_ID.test(id)).toBe(true);
  });

  it('are a delegation id, and distinct bytes give distinct ids (128 random bits kept)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), (a, b) => {
        const [x, y] = [newDelegationId(a), newDelegationId(b)];
        expect(DELEGATION_ID.test(x)).toBe(true);
        expect(x.startsWith('-')).toBe(false);
        expect(x === y).toBe(Buffer.from(a).equals(Buffer.from(b)));
      }),
    );
  });

  it('refuses anything but 16 bytes', () => {
    expect(() => newDelegationId(new Uint8Array(15))).toThrow(RangeError);
  });
});
