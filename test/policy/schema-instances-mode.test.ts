// Binding fields added with issue 12: `instances.ec2Tag` (an EC2 tag the parent instance must carry)
// and `mode` (jwe or kms-recipient). Each is checked for type, format, both sides of its bounds and the
// exact path of the refusal.
import { describe, expect, it } from 'vitest';
import { bindingDoc, expectRefused, type Doc } from './schema-support.js';
import { parseBinding } from '../../broker/policy/schema.js';
import { RELEASE_MODES } from '../../broker/policy/types.js';


const binding = (extra: Doc = {}): Doc => bindingDoc('db-password', extra);


const tagged = (ec2Tag: unknown): Doc => binding({ instances: { ec2Tag } });

describe('instances.ec2Tag', () => {
  it.each([
    [{ key: 'team', value: 'payments' }],
    [{ key: 'k', value: '' }],
    [{ key: 'k'.repeat(128), value: 'v'.repeat(256) }],
    [{ key: 'aws:cloudformation:stack-name', value: 'a b/c=d+e-f_g.h:i@j \u00e9\u00f1 \u4e2d' }],
  ])('accepts %j', (ec2Tag) => {
    expect(parseBinding(tagged(ec2Tag)).instances).toStrictEqual({ ec2Tag });
  });

  it.each([
    [null, 'binding.instances.ec2Tag'],
    ['team=payments', 'binding.instances.ec2Tag'],
    [[], 'binding.instances.ec2Tag'],
    [{ key: 'team', value: 'payments', op: 'eq' }, 'binding.instances.ec2Tag.op'],
    [{ value: 'payments' }, 'binding.instances.ec2Tag.key'],
    [{ key: 'team' }, 'binding.instances.ec2Tag.value'],
    [{ key: '', value: 'payments' }, 'binding.instances.ec2Tag.key'],
    [{ key: 'k'.repeat(129), value: 'payments' }, 'binding.instances.ec2Tag.key'],
    [{ key: 'team', value: 'v'.repeat(257) }, 'binding.instances.ec2Tag.value'],
    [{ key: 'te\nam', value: 'payments' }, 'binding.instances.ec2Tag.key'],
    [{ key: 'team\u0000', value: 'payments' }, 'binding.instances.ec2Tag.key'],
    [{ key: '\u007fteam', value: 'payments' }, 'binding.instances.ec2Tag.key'],
    [{ key: 'team', value: 'pay\rments' }, 'binding.instances.ec2Tag.value'],
    [{ key: 'team', value: '\tpayments' }, 'binding.instances.ec2Tag.value'],
    [{ key: 'team', value: 'payments\u0085' }, 'binding.instances.ec2Tag.value'],
    [{ key: 7, value: 'payments' }, 'binding.instances.ec2Tag.key'],
    [{ key: 'team', value: 7 }, 'binding.instances.ec2Tag.value'],
  ])('refuses %j at %s', (ec2Tag, path) => {
    expectRefused(() => parseBinding(tagged(ec2Tag)), path);
  });

  it('takes exactly one of ids or ec2Tag', () => {
    expectRefused(() => parseBinding(binding({ instances: { ids: ['i-01234567'], ec2Tag: { key: 'k', value: 'v' } } })), 'binding.instances');
    expectRefused(() => parseBinding(binding({ instances: {} })), 'binding.instances');
    expect(parseBinding(binding({ instances: { ids: ['i-01234567'] } })).instances).toStrictEqual({ ids: ['i-01234567'] });
  });
});

describe('mode', () => {
  const kms = { provider: 'aws-kms', kmsKeyId: 'alias/k' };

  it('names jwe and kms-recipient', () => {
    expect(RELEASE_MODES).toEqual(['jwe', 'kms-recipient']);
  });

  it('is absent unless given, and kept as given', () => {
    expect('mode' in parseBinding(binding(kms))).toBe(false);
    expect(parseBinding(binding({ ...kms, mode: 'jwe' })).mode).toBe('jwe');
    expect(parseBinding(binding({ mode: 'jwe' })).mode).toBe('jwe');
    expect(parseBinding(binding({ ...kms, mode: 'kms-recipient' })).mode).toBe('kms-recipient');
  });

  it.each(['', 'JWE', 'jwex', 'xjwe', 'kms', 'kms-recipientx', 'jwe|kms-recipient', 7, null])('refuses %j', (mode) => {
    expectRefused(() => parseBinding(binding({ ...kms, mode })), 'binding.mode');
  });

  it('kms-recipient needs the aws-kms provider', () => {
    expectRefused(() => parseBinding(binding({ mode: 'kms-recipient' })), 'binding.mode');
  });
});
