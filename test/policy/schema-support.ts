// What the schema suites share: a well-formed binding document to vary, and the exact-refusal check.
import { expect } from 'vitest';
import { SchemaError } from '../../broker/policy/schema.js';

export type Doc = Record<string, unknown>;

export const TIME = '2026-01-01T00:00:00.000Z';

/** A 48-byte PCR value of one repeated byte, in hex. */
export const hex = (byte: number): string => byte.toString(16).padStart(2, '0').repeat(48);

/** A valid binding document for `secret` (local provider, one PCR0/1/2 rule), with `extra` fields over it. */
export function bindingDoc(secret: string, extra: Doc = {}): Doc {
  return {
    secret,
    version: 1,
    provider: 'local',
    ciphertext: 'AAAA',
    text: true,
    allow: [{ pcrs: { 0: hex(1), 1: hex(2), 2: hex(3) } }],
    allowDebug: false,
    ttlSeconds: 60,
    revoked: false,
    createdAt: TIME,
    updatedAt: TIME,
    ...extra,
  };
}

/** `fn` must throw a SchemaError (code SCHEMA_INVALID) whose path is exactly `path`, and whose message starts with it. */
export function expectRefused(fn: () => unknown, path: string): void {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(SchemaError);
  expect((thrown as SchemaError).code).toBe('SCHEMA_INVALID');
  expect((thrown as SchemaError).path).toBe(path);
  expect((thrown as SchemaError).message.startsWith(`${path}: `)).toBe(true);
}
