import { describe, expect, it } from 'vitest';
import { callerCode, decide, expectedPcr4, instanceIdOf, type EnclaveIdentity } from '../../broker/policy/decide.js';
import { SchemaError, parseBinding, parseRevocations } from '../../broker/policy/schema.js';
import { NO_REVOCATIONS, type Binding, type Revocations } from '../../broker/policy/types.js';
import { verifyAttestation } from '../../index.js';
import type { PcrValues } from '../../lib/pcrs.js';
import { fixtureBytes, realDocuments } from '../support/fixtures.js';

const h = (byte: number): string => byte.toString(16).padStart(2, '0').repeat(48);
const INSTANCE = 'i-0123456789abcdef0';

function identity(over: Partial<{ pcr: PcrValues; moduleId: string; debug: boolean }> = {}): EnclaveIdentity {
  const pcrs: PcrValues = { 0: h(1), 1: h(2), 2: h(3), 3: h(0), 4: expectedPcr4(INSTANCE), 8: h(0), ...over.pcr };
  return { moduleId: over.moduleId ?? `${INSTANCE}-enc0123456789abcdef`, pcrs, debug: over.debug ?? false };
}

function binding(over: Partial<Binding> = {}): Binding {
  return parseBinding({
    secret: 'db-password',
    version: 1,
    provider: 'local',
    ciphertext: 'AAAA',
    text: true,
    allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) } }],
    allowDebug: false,
    ttlSeconds: 60,
    revoked: false,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    ...over,
  });
}

const rev = (over: Partial<Revocations>): Revocations => ({ ...NO_REVOCATIONS, ...over });

describe('decide', () => {
  const APPROVED_BUILDS = new Map([['build-41', { 0: h(1), 1: h(2), 2: h(3) }], ['build-42', { 0: h(1), 1: h(2), 2: h(3) }], ['build-43', { 0: h(9), 1: h(2), 2: h(3) }]]);
  const table: Array<[string, Binding | undefined, EnclaveIdentity, Revocations, string]> = [
    ['exact PCR0/1/2 match', binding(), identity(), NO_REVOCATIONS, 'allow:0'],
    ['unknown secret', undefined, identity(), NO_REVOCATIONS, 'UNKNOWN_SECRET'],
    ['PCR0 differs', binding(), identity({ pcr: { 0: h(9) } }), NO_REVOCATIONS, 'PCR_MISMATCH'],
    ['PCR2 differs', binding(), identity({ pcr: { 2: h(9) } }), NO_REVOCATIONS, 'PCR_MISMATCH'],
    ['optional PCR8 pinned and equal', binding({ allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3), 8: h(0) } }] }), identity(), NO_REVOCATIONS, 'allow:0'],
    ['optional PCR8 pinned and different', binding({ allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3), 8: h(7) } }] }), identity(), NO_REVOCATIONS, 'PCR_MISMATCH'],
    ['second of two rules (rolling deploy)', binding({ allow: [{ pcrs: { 0: h(5), 1: h(2), 2: h(3) } }, { pcrs: { 0: h(1), 1: h(2), 2: h(3) } }] }), identity(), NO_REVOCATIONS, 'allow:1'],
    ['debug enclave, not allowed', binding({ allow: [{ pcrs: { 0: h(0), 1: h(0), 2: h(0) } }] }), identity({ pcr: { 0: h(0), 1: h(0), 2: h(0) }, debug: true }), NO_REVOCATIONS, 'DEBUG_NOT_ALLOWED'],
    ['debug enclave, allowed by the binding', binding({ allowDebug: true, allow: [{ pcrs: { 0: h(0), 1: h(0), 2: h(0) } }] }), identity({ pcr: { 0: h(0), 1: h(0), 2: h(0) }, debug: true }), NO_REVOCATIONS, 'allow:0'],
    ['secret revoked', binding({ revoked: true }), identity(), NO_REVOCATIONS, 'SECRET_REVOKED'],
    ['PCR0 revoked', binding(), identity(), rev({ pcr0: [h(1)] }), 'REVOKED'],
    ['instance revoked', binding(), identity(), rev({ instances: [INSTANCE] }), 'REVOKED'],
    ['PCR0 revoked even for an unknown secret', undefined, identity(), rev({ pcr0: [h(1)] }), 'REVOKED'],
    ['baseline of the only matching rule revoked', binding({ allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) }, baseline: 'build-41' }] }), identity(), rev({ baselines: ['build-41'] }), 'REVOKED'],
    ['revoked baseline skipped, another rule matches', binding({ allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) }, baseline: 'build-41' }, { pcrs: { 0: h(1), 1: h(2), 2: h(3) }, baseline: 'build-42' }] }), identity(), rev({ baselines: ['build-41'] }), 'allow:1'],
    ['baseline rule, baseline approved', binding({ allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) }, baseline: 'build-42' }] }), identity(), NO_REVOCATIONS, 'allow:0'],
    ['baseline rule, baseline not approved', binding({ allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) }, baseline: 'build-99' }] }), identity(), NO_REVOCATIONS, 'BASELINE_NOT_APPROVED'],
    ['baseline rule whose PCRs differ from the approved baseline', binding({ allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) }, baseline: 'build-43' }] }), identity(), NO_REVOCATIONS, 'BASELINE_NOT_APPROVED'],
    ['instance allowed', binding({ instances: { ids: [INSTANCE] } }), identity(), NO_REVOCATIONS, 'allow:0'],
    ['instance not in the list', binding({ instances: { ids: ['i-0000000000000000a'] } }), identity(), NO_REVOCATIONS, 'INSTANCE_NOT_ALLOWED'],
    ['module id names the instance but PCR4 does not', binding({ instances: { ids: [INSTANCE] } }), identity({ pcr: { 4: h(4) } }), NO_REVOCATIONS, 'INSTANCE_NOT_ALLOWED'],
    ['module id without instance', binding({ instances: { ids: [INSTANCE] } }), identity({ moduleId: 'enclave' }), NO_REVOCATIONS, 'INSTANCE_NOT_ALLOWED'],
  ];
  it.each(table)('%s -> %s', (_name, b, id, r, expected) => {
    const d = decide(b, id, r, APPROVED_BUILDS);
    expect(d.allow ? `allow:${d.rule}` : d.reason).toBe(expected);
  });

  it('tells callers only POLICY_DENIED or REVOKED', () => {
    expect(callerCode('UNKNOWN_SECRET')).toBe('POLICY_DENIED');
    expect(callerCode('PCR_MISMATCH')).toBe('POLICY_DENIED');
    expect(callerCode('SECRET_REVOKED')).toBe('POLICY_DENIED');
    expect(callerCode('REVOKED')).toBe('REVOKED');
  });
});

describe('PCR4 and module id facts hold on every real document', () => {
  it.each(realDocuments)('$file', (entry) => {
    const doc = verifyAttestation(fixtureBytes(entry.file), { at: entry.timestamp_ms, allowDebug: true });
    const instance = instanceIdOf(doc.moduleId)!;
    expect(instance).toMatch(/^i-[0-9a-f]+$/);
    expect(Buffer.from(doc.pcrs.get(4)!).toString('hex')).toBe(expectedPcr4(instance));
  });
});

describe('binding schema', () => {
  const good = (): Record<string, unknown> => JSON.parse(JSON.stringify(binding())) as Record<string, unknown>;
  it.each([
    ['secret', (b: Record<string, unknown>) => (b.secret = '../etc/passwd'), 'binding.secret'],
    ['version', (b: Record<string, unknown>) => (b.version = 0), 'binding.version'],
    ['provider', (b: Record<string, unknown>) => (b.provider = 'vault'), 'binding.provider'],
    ['aws-kms without key', (b: Record<string, unknown>) => (b.provider = 'aws-kms'), 'binding.kmsKeyId'],
    ['empty allow', (b: Record<string, unknown>) => (b.allow = []), 'binding.allow'],
    ['missing PCR1', (b: Record<string, unknown>) => (b.allow = [{ pcrs: { 0: h(1), 2: h(3) } }]), 'binding.allow[0].pcrs.1'],
    ['PCR5 not bindable', (b: Record<string, unknown>) => (b.allow = [{ pcrs: { 0: h(1), 1: h(2), 2: h(3), 5: h(1) } }]), 'binding.allow[0].pcrs.5'],
    ['upper-case hex', (b: Record<string, unknown>) => (b.allow = [{ pcrs: { 0: h(1).toUpperCase().replace(/0/g, 'A'), 1: h(2), 2: h(3) } }]), 'binding.allow[0].pcrs.0'],
    ['mixed lengths', (b: Record<string, unknown>) => (b.allow = [{ pcrs: { 0: h(1), 1: h(2).slice(0, 64), 2: h(3) } }]), 'binding.allow[0].pcrs.1'],
    ['ttl too long', (b: Record<string, unknown>) => (b.ttlSeconds = 10 ** 6), 'binding.ttlSeconds'],
    ['unknown field', (b: Record<string, unknown>) => (b.value = 'plaintext!'), 'binding.value'],
    ['bad instance id', (b: Record<string, unknown>) => (b.instances = { ids: ['host-1'] }), 'binding.instances.ids[0]'],
    ['not base64', (b: Record<string, unknown>) => (b.ciphertext = 'not base64!'), 'binding.ciphertext'],
  ])('rejects %s, naming the field', (_name, mutate, path) => {
    const b = good();
    mutate(b);
    try {
      parseBinding(b);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(SchemaError);
      expect((err as SchemaError).path).toBe(path);
    }
  });

  it('validates revocations', () => {
    expect(parseRevocations({}).pcr0).toEqual([]);
    expect(() => parseRevocations({ pcr0: ['zz'] })).toThrow(SchemaError);
    expect(() => parseRevocations({ other: [] })).toThrow(SchemaError);
  });
});
