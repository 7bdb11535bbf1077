// The policy's instance facts (issue 12): the attested instance (module id and PCR4 must agree), the
// EC2 tag restriction (checked only for a request nothing else refuses; unknown tags fail closed), PCR3
// as Nitro measures an IAM role, and a baseline rule that adds PCR3/PCR4 to its recorded image PCRs.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { IAM_ROLE_ARN, attestedInstanceOf, callerCode, decide, expectedPcr3, expectedPcr4, type EnclaveIdentity } from '../../broker/policy/decide.js';
import { parseBinding } from '../../broker/policy/schema.js';
import { NO_REVOCATIONS, type Binding } from '../../broker/policy/types.js';
import type { PcrValues } from '../../lib/pcrs.js';

const h = (byte: number): string => byte.toString(16).padStart(2, '0').repeat(48);
const INSTANCE = 'i-0123456789abcdef0';
const ROLE = 'arn:aws:iam::123456789012:role/keygate-enclave';
const IMAGE = { 0: h(1), 1: h(2), 2: h(3) };

function identity(pcrs: PcrValues = {}, moduleId = `${INSTANCE}-enc0123456789abcdef`): EnclaveIdentity {
  return { moduleId, pcrs: { ...IMAGE, 3: expectedPcr3(ROLE), 4: expectedPcr4(INSTANCE), 8: h(0), ...pcrs }, debug: false };
}

function binding(over: Record<string, unknown> = {}): Binding {
  return parseBinding({
    secret: 'db-password',
    version: 1,
    provider: 'local',
    ciphertext: 'AAAA',
    text: true,
    allow: [{ pcrs: IMAGE }],
    allowDebug: false,
    ttlSeconds: 60,
    revoked: false,
    createdAt: '2026-01-01T00:00:00.000Z',
    updatedAt: '2026-01-01T00:00:00.000Z',
    ...over,
  });
}

const outcome = (d: ReturnType<typeof decide>): string => (d.allow ? `allow:${d.rule}` : d.reason);
const TAGGED = binding({ instances: { ec2Tag: { key: 'team', value: 'payments' } } });

describe('attestedInstanceOf', () => {
  it('is the module id\'s instance when PCR4 measures it', () => {
    expect(attestedInstanceOf(identity())).toBe(INSTANCE);
  });
  it.each([
    ['PCR4 of another instance', identity({ 4: expectedPcr4('i-0000000000000000a') })],
    ['PCR4 absent', { ...identity(), pcrs: { ...IMAGE } }],
    ['a module id without an instance', identity({}, 'enclave-enc0123')],
    ['a module id without an instance, PCR4 of the empty id', identity({ 4: expectedPcr4('') }, 'enclave-enc0123')],
  ])('is undefined for %s', (_name, id) => {
    expect(attestedInstanceOf(id)).toBeUndefined();
  });
});

describe('expectedPcr3 and IAM_ROLE_ARN', () => {
  it('PCR3 is SHA-384 of 48 zero bytes followed by the role ARN', () => {
    const expected = createHash('sha384').update(Buffer.concat([Buffer.alloc(48), Buffer.from(ROLE, 'utf8')])).digest('hex');
    expect(expectedPcr3(ROLE)).toBe(expected);
    expect(expectedPcr3(ROLE)).toMatch(/^[0-9a-f]{96}$/);
    expect(expectedPcr3(`${ROLE}x`)).not.toBe(expected);
  });

  it.each([
    ROLE,
    'arn:aws:iam::123456789012:role/a',
    'arn:aws-cn:iam::123456789012:role/a',
    'arn:aws-us-gov:iam::123456789012:role/a',
    'arn:aws:iam::000000000000:role/path/to/Role_Name+=,.@-9',
    `arn:aws:iam::123456789012:role/${'r'.repeat(512)}`,
  ])('accepts the role ARN %s', (arn) => {
    expect(IAM_ROLE_ARN.test(arn)).toBe(true);
  });

  it.each([
    '',
    'arn:aws:iam::123456789012:role/',
    `arn:aws:iam::123456789012:role/${'r'.repeat(513)}`,
    'arn:aws:iam::12345678901:role/a',
    'arn:aws:iam::1234567890123:role/a',
    'arn:aws:iam::12345678901a:role/a',
    'arn:aws:iam::123456789012:user/a',
    'arn:aws:iam::123456789012:instance-profile/a',
    'arn:aws:sts::123456789012:role/a',
    'arn:aws1:iam::123456789012:role/a',
    'arn:AWS:iam::123456789012:role/a',
    'arn:aws:iam:eu-west-1:123456789012:role/a',
    `x${ROLE}`,
    `${ROLE}\n`,
    `${ROLE} `,
    'arn:aws:iam::123456789012:role/a b',
    'arn:aws:iam::123456789012:role/a*',
  ])('refuses %j', (arn) => {
    expect(IAM_ROLE_ARN.test(arn)).toBe(false);
  });
});

describe('decide with an EC2 tag restriction', () => {
  const tags = (entries: Array<[string, string]>): Map<string, string> => new Map(entries);

  it('allows the attested instance carrying the exact tag', () => {
    expect(outcome(decide(TAGGED, identity(), NO_REVOCATIONS, new Map(), tags([['team', 'payments']])))).toBe('allow:0');
    expect(outcome(decide(TAGGED, identity(), NO_REVOCATIONS, new Map(), tags([['env', 'prod'], ['team', 'payments']])))).toBe('allow:0');
  });

  it.each([
    ['another value', [['team', 'billing']]],
    ['the value in another key', [['owner', 'payments']]],
    ['a value that differs in case', [['team', 'Payments']]],
    ['no tags at all', []],
  ] as Array<[string, Array<[string, string]>]>)('refuses an instance with %s', (_name, entries) => {
    expect(outcome(decide(TAGGED, identity(), NO_REVOCATIONS, new Map(), tags(entries)))).toBe('INSTANCE_NOT_ALLOWED');
  });

  it('fails closed when the tags are not known, as POLICY_DENIED', () => {
    const d = decide(TAGGED, identity(), NO_REVOCATIONS);
    expect(outcome(d)).toBe('INSTANCE_TAGS_UNAVAILABLE');
    expect(d.allow ? undefined : callerCode(d.reason)).toBe('POLICY_DENIED');
  });

  it('refuses an instance PCR4 does not confirm, whatever its tags', () => {
    expect(outcome(decide(TAGGED, identity({ 4: h(4) }), NO_REVOCATIONS, new Map(), tags([['team', 'payments']])))).toBe('INSTANCE_NOT_ALLOWED');
    expect(outcome(decide(TAGGED, identity({}, 'enclave-enc01'), NO_REVOCATIONS, new Map(), tags([['team', 'payments']])))).toBe('INSTANCE_NOT_ALLOWED');
    expect(outcome(decide(TAGGED, identity({ 4: h(4) }), NO_REVOCATIONS))).toBe('INSTANCE_NOT_ALLOWED');
  });

  it('needs no tags for a request refused for another reason (the lookup is only for requests nothing else refuses)', () => {
    expect(outcome(decide(TAGGED, identity({ 0: h(9) }), NO_REVOCATIONS))).toBe('PCR_MISMATCH');
    const unapproved = binding({ instances: { ec2Tag: { key: 'team', value: 'payments' } }, allow: [{ pcrs: IMAGE, baseline: 'build-1' }] });
    expect(outcome(decide(unapproved, identity(), NO_REVOCATIONS))).toBe('BASELINE_NOT_APPROVED');
  });

  it('an instance id list still applies (and is not consulted for a tag restriction)', () => {
    const listed = binding({ instances: { ids: [INSTANCE] } });
    expect(outcome(decide(listed, identity(), NO_REVOCATIONS))).toBe('allow:0');
    expect(outcome(decide(binding({ instances: { ids: ['i-0000000000000000a'] } }), identity(), NO_REVOCATIONS, new Map(), tags([['team', 'payments']])))).toBe('INSTANCE_NOT_ALLOWED');
  });
});

describe('decide with a baseline rule that also pins PCR3 or PCR4', () => {
  const approved = new Map<string, PcrValues>([['build-1', { ...IMAGE }], ['build-8', { ...IMAGE, 8: h(0) }]]);

  it.each([
    ['PCR3 (IAM role)', { ...IMAGE, 3: expectedPcr3(ROLE) }, 'build-1', 'allow:0'],
    ['PCR4 (instance)', { ...IMAGE, 4: expectedPcr4(INSTANCE) }, 'build-1', 'allow:0'],
    ['PCR3 and PCR8, baseline recording PCR8', { ...IMAGE, 3: expectedPcr3(ROLE), 8: h(0) }, 'build-8', 'allow:0'],
    ['PCR8 the baseline does not record', { ...IMAGE, 8: h(0) }, 'build-1', 'BASELINE_NOT_APPROVED'],
    ['no PCR8, baseline recording PCR8', { ...IMAGE, 3: expectedPcr3(ROLE) }, 'build-8', 'BASELINE_NOT_APPROVED'],
  ])('compares only the image PCRs with the baseline: %s', (_name, pcrs, baseline, expected) => {
    expect(outcome(decide(binding({ allow: [{ pcrs, baseline }] }), identity(), NO_REVOCATIONS, approved))).toBe(expected);
  });

  it('the added PCR3 or PCR4 must still match the enclave', () => {
    const rule = { pcrs: { ...IMAGE, 3: expectedPcr3('arn:aws:iam::123456789012:role/other') }, baseline: 'build-1' };
    expect(outcome(decide(binding({ allow: [rule] }), identity(), NO_REVOCATIONS, approved))).toBe('PCR_MISMATCH');
  });
});
