// The policy schema decides what a binding or a revocation list may contain.
// A schema that lets a malformed document through is how a pin or a
// revocation silently stops applying, so each field is checked for its type,
// its range or format (both sides of every boundary), unknown keys, and the
// exact path and code of the refusal.
import { describe, expect, it } from 'vitest';
import { ISO_TIME, INSTANCE_ID_BODY, SECRET_NAME, SchemaError, parseBinding, parsePcrValues, parseRevocations } from '../../broker/policy/schema.js';
import { BINDABLE_PCRS, NO_REVOCATIONS, PROVIDER_NAMES, REQUIRED_PCRS } from '../../broker/policy/types.js';

type Doc = Record<string, unknown>;

/** A PCR value of `bytes` bytes, each `byte`. */
const hex = (byte: number, bytes = 48): string => byte.toString(16).padStart(2, '0').repeat(bytes);
const PCRS = { 0: hex(1), 1: hex(2), 2: hex(3) };
const TIME = '2026-01-01T00:00:00.000Z';

function good(): Doc {
  return {
    secret: 'db-password',
    version: 1,
    provider: 'local',
    ciphertext: 'AAAA',
    text: true,
    allow: [{ pcrs: { ...PCRS } }],
    allowDebug: false,
    ttlSeconds: 60,
    revoked: false,
    createdAt: TIME,
    updatedAt: TIME,
  };
}

/** Runs `fn`, which must throw a SchemaError (code SCHEMA_INVALID) naming `path`. */
function refusal(fn: () => unknown): SchemaError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SchemaError);
    expect((err as SchemaError).code).toBe('SCHEMA_INVALID');
    expect((err as SchemaError).name).toBe('SchemaError');
    return err as SchemaError;
  }
  return expect.unreachable('accepted');
}

function expectRefused(fn: () => unknown, path: string): void {
  const err = refusal(fn);
  expect(err.path).toBe(path);
  expect(err.message.startsWith(`${path}: `)).toBe(true);
}

const withField = (field: string, value: unknown): Doc => ({ ...good(), [field]: value });
const without = (field: string): Doc => {
  const b = good();
  delete b[field];
  return b;
};

describe('exported vocabulary', () => {
  it('names the bindable and required PCRs and the providers', () => {
    expect(BINDABLE_PCRS).toEqual([0, 1, 2, 3, 4, 8]);
    expect(REQUIRED_PCRS).toEqual([0, 1, 2]);
    expect(PROVIDER_NAMES).toEqual(['local', 'aws-kms']);
    expect(NO_REVOCATIONS).toEqual({ pcr0: [], instances: [], baselines: [] });
    expect(INSTANCE_ID_BODY).toBe('i-[0-9a-f]{8,32}');
  });

  it.each([
    ['a', true],
    ['Z', true],
    ['0', true],
    ['db-password', true],
    ['A.b_c-9', true],
    ['a'.repeat(128), true],
    ['a'.repeat(129), false],
    ['', false],
    ['.hidden', false],
    ['-flag', false],
    ['_x', false],
    ['../etc/passwd', false],
    ['a/b', false],
    ['a b', false],
    [' a', false],
    ['a ', false],
    ['a\n', false],
    ['é', false],
  ])('SECRET_NAME %j -> %s', (name, ok) => {
    expect(SECRET_NAME.test(name)).toBe(ok);
  });

  it.each([
    ['2026-01-01T00:00:00Z', true],
    ['2026-01-01T00:00:00.000Z', true],
    ['2026-12-31T23:59:59.1Z', true],
    ['2026-01-01T00:00:00.123456789Z', true],
    ['2026-01-01T00:00:00', false],
    ['2026-01-01T00:00:00+00:00', false],
    ['2026-01-01T00:00:00.Z', false],
    ['2026-01-01 00:00:00Z', false],
    ['2026-01-01T00:00Z', false],
    ['26-01-01T00:00:00Z', false],
    ['20260-01-01T00:00:00Z', false],
    ['2026-1-01T00:00:00Z', false],
    ['2026-01-1T00:00:00Z', false],
    ['2026-01-01T0:00:00Z', false],
    ['2026-01-01T00:0:00Z', false],
    ['2026-01-01T00:00:0Z', false],
    ['x2026-01-01T00:00:00Z', false],
    ['2026-01-01T00:00:00Zx', false],
    ['abcd-ef-ghTij:kl:mnZ', false],
    ['2026-01-01T00:00:00.abcZ', false],
    ['', false],
  ])('ISO_TIME %j -> %s', (time, ok) => {
    expect(ISO_TIME.test(time)).toBe(ok);
  });
});

describe('parseBinding', () => {
  it('returns exactly the validated fields, without absent optional ones', () => {
    const parsed = parseBinding(good());
    expect(parsed).toStrictEqual(good());
    expect('kmsKeyId' in parsed).toBe(false);
    expect('instances' in parsed).toBe(false);
    expect('baseline' in parsed.allow[0]!).toBe(false);
  });

  it('keeps every optional field it accepts', () => {
    const doc = {
      ...good(),
      provider: 'aws-kms',
      kmsKeyId: 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
      ciphertext: 'AQID+/8=',
      text: false,
      allow: [{ pcrs: { ...PCRS, 3: hex(4), 4: hex(5), 8: hex(6) }, baseline: 'build-7' }, { pcrs: { ...PCRS } }],
      instances: { ids: ['i-0123456789abcdef0', 'i-01234567'] },
      allowDebug: true,
      ttlSeconds: 86_400,
      revoked: true,
      version: Number.MAX_SAFE_INTEGER,
      createdAt: '2026-01-01T00:00:00Z',
    };
    expect(parseBinding(doc)).toStrictEqual(doc);
  });

  it('names the path given by the caller', () => {
    expectRefused(() => parseBinding(withField('version', 0), 'store.bindings["x"]'), 'store.bindings["x"].version');
  });

  it('quotes at most 80 characters of a malformed value in the message', () => {
    const err = refusal(() => parseBinding(withField('secret', `/${'x'.repeat(300)}`)));
    expect(err.message).toContain(`"/${'x'.repeat(79)}"`);
    expect(err.message).not.toContain('x'.repeat(80));
  });

  it.each([null, undefined, 'binding', 42, [], [good()], true])('refuses a non-object binding %j', (doc) => {
    expectRefused(() => parseBinding(doc), 'binding');
  });

  it.each(['value', 'plaintext', 'pcrs', 'constructor', '__proto__x'])('refuses the unknown field %s', (field) => {
    expectRefused(() => parseBinding(withField(field, 'x')), `binding.${field}`);
  });

  it.each([
    'secret',
    'version',
    'provider',
    'ciphertext',
    'text',
    'allow',
    'allowDebug',
    'ttlSeconds',
    'revoked',
    'createdAt',
    'updatedAt',
  ])('requires %s', (field) => {
    expectRefused(() => parseBinding(without(field)), `binding.${field}`);
  });

  describe('secret', () => {
    it.each(['', '../etc/passwd', '.x', 'a'.repeat(129), 7, null])('refuses %j', (v) => {
      expectRefused(() => parseBinding(withField('secret', v)), 'binding.secret');
    });
    it('accepts 128 characters', () => {
      expect(parseBinding(withField('secret', 'a'.repeat(128))).secret).toBe('a'.repeat(128));
    });
  });

  describe('version', () => {
    it.each([0, -1, 1.5, '1', Number.MAX_SAFE_INTEGER + 1, Number.POSITIVE_INFINITY, Number.NaN, null, true])('refuses %j', (v) => {
      expectRefused(() => parseBinding(withField('version', v)), 'binding.version');
    });
    it.each([1, 2, Number.MAX_SAFE_INTEGER])('accepts %d', (v) => {
      expect(parseBinding(withField('version', v)).version).toBe(v);
    });
  });

  describe('provider', () => {
    it.each(['vault', 'Local', 'xlocal', 'localx', 'local|aws-kms', 'aws-kmsx', 'xaws-kms', '', 1, null])('refuses %j', (v) => {
      expectRefused(() => parseBinding(withField('provider', v)), 'binding.provider');
    });
    it('aws-kms requires a key id; local does not', () => {
      expectRefused(() => parseBinding(withField('provider', 'aws-kms')), 'binding.kmsKeyId');
      expect(parseBinding({ ...good(), provider: 'aws-kms', kmsKeyId: 'alias/keygate' }).kmsKeyId).toBe('alias/keygate');
      expect(parseBinding({ ...good(), provider: 'local', kmsKeyId: 'alias/keygate' }).kmsKeyId).toBe('alias/keygate');
    });
  });

  describe('kmsKeyId', () => {
    it.each(['', 'key id', 'key\nid', 'k'.repeat(2049), 'é', 5, null])('refuses %j', (v) => {
      expectRefused(() => parseBinding({ ...good(), provider: 'aws-kms', kmsKeyId: v }), 'binding.kmsKeyId');
    });
    it.each(['k', 'k'.repeat(2048), 'arn:aws:kms:us-east-1:1:alias/a_b+c=d,e.f@g-h'])('accepts %j', (v) => {
      expect(parseBinding({ ...good(), provider: 'aws-kms', kmsKeyId: v }).kmsKeyId).toBe(v);
    });
  });

  describe('ciphertext', () => {
    it.each(['', '=', 'A===', 'AA=A', 'not base64!', 'AA-_', ' AAAA', 'AAAA ', 'AAAA\n', 7, null])('refuses %j', (v) => {
      expectRefused(() => parseBinding(withField('ciphertext', v)), 'binding.ciphertext');
    });
    it.each(['A', 'AAAA', 'AAA=', 'AA==', 'aZ09+/'])('accepts %j', (v) => {
      expect(parseBinding(withField('ciphertext', v)).ciphertext).toBe(v);
    });
  });

  it.each(['text', 'allowDebug', 'revoked'])('%s must be a boolean', (field) => {
    for (const v of ['true', 1, 0, null]) expectRefused(() => parseBinding(withField(field, v)), `binding.${field}`);
    expect((parseBinding(withField(field, true)) as unknown as Doc)[field]).toBe(true);
    expect((parseBinding(withField(field, false)) as unknown as Doc)[field]).toBe(false);
  });

  describe('ttlSeconds', () => {
    it.each([0, -1, 86_401, 1.5, '60', null])('refuses %j', (v) => {
      expectRefused(() => parseBinding(withField('ttlSeconds', v)), 'binding.ttlSeconds');
    });
    it.each([1, 86_400])('accepts %d', (v) => {
      expect(parseBinding(withField('ttlSeconds', v)).ttlSeconds).toBe(v);
    });
  });

  it.each(['createdAt', 'updatedAt'])('%s must be an ISO time', (field) => {
    for (const v of ['2026-01-01', '2026-01-01T00:00:00+01:00', 0, null]) expectRefused(() => parseBinding(withField(field, v)), `binding.${field}`);
  });

  describe('allow', () => {
    it.each([[[]], [{}], ['rule'], [null]])('refuses %j', (v) => {
      expectRefused(() => parseBinding(withField('allow', v)), 'binding.allow');
    });
    it('names the rule at fault', () => {
      expectRefused(() => parseBinding(withField('allow', [{ pcrs: PCRS }, { pcrs: PCRS, extra: 1 }])), 'binding.allow[1].extra');
      expectRefused(() => parseBinding(withField('allow', [{ pcrs: PCRS }, 'rule'])), 'binding.allow[1]');
      expectRefused(() => parseBinding(withField('allow', [{ pcrs: PCRS }, {}])), 'binding.allow[1].pcrs');
      expectRefused(() => parseBinding(withField('allow', [{ pcrs: PCRS, baseline: '../x' }])), 'binding.allow[0].baseline');
      expectRefused(() => parseBinding(withField('allow', [{ pcrs: PCRS, baseline: 7 }])), 'binding.allow[0].baseline');
    });
    it('keeps a rule baseline', () => {
      expect(parseBinding(withField('allow', [{ pcrs: PCRS, baseline: 'build-1' }])).allow).toStrictEqual([{ pcrs: PCRS, baseline: 'build-1' }]);
    });
  });

  describe('instances', () => {
    it.each([
      [null, 'binding.instances'],
      [['i-0123456789abcdef0'], 'binding.instances'],
      [{}, 'binding.instances'], // exactly one of ids or ec2Tag
      [{ ids: 'i-0123456789abcdef0' }, 'binding.instances.ids'],
      [{ ids: ['i-0123456789abcdef0'], extra: true }, 'binding.instances.extra'],
      [{ ids: ['i-0123456789abcdef0', 'host-1'] }, 'binding.instances.ids[1]'],
      [{ ids: ['i-0123456'] }, 'binding.instances.ids[0]'],
      [{ ids: [`i-${'0'.repeat(33)}`] }, 'binding.instances.ids[0]'],
      [{ ids: ['i-0123456789ABCDEF0'] }, 'binding.instances.ids[0]'],
      [{ ids: ['i-0123456789abcdeg0'] }, 'binding.instances.ids[0]'],
      [{ ids: ['xi-0123456789abcdef0'] }, 'binding.instances.ids[0]'],
      [{ ids: ['i-0123456789abcdef0x'] }, 'binding.instances.ids[0]'],
      [{ ids: [7] }, 'binding.instances.ids[0]'],
    ])('refuses %j', (v, path) => {
      expectRefused(() => parseBinding(withField('instances', v)), path);
    });
    it.each([[[]], [['i-01234567']], [[`i-${'f'.repeat(32)}`]]])('accepts ids %j', (ids) => {
      expect(parseBinding(withField('instances', { ids })).instances).toStrictEqual({ ids });
    });
  });
});

describe('parsePcrValues', () => {
  it.each([32, 48, 64])('accepts PCRs of %d bytes and returns them unchanged', (bytes) => {
    const pcrs = { 0: hex(1, bytes), 1: hex(2, bytes), 2: hex(3, bytes), 3: hex(4, bytes), 4: hex(5, bytes), 8: hex(0xab, bytes) };
    expect(parsePcrValues(pcrs, 'p')).toStrictEqual({ 0: hex(1, bytes), 1: hex(2, bytes), 2: hex(3, bytes), 3: hex(4, bytes), 4: hex(5, bytes), 8: hex(0xab, bytes) });
  });

  it.each(REQUIRED_PCRS.map((i) => [i]))('requires PCR%d', (index) => {
    const pcrs: Doc = { ...PCRS };
    delete pcrs[String(index)];
    expectRefused(() => parsePcrValues(pcrs, 'p'), `p.${index}`);
  });

  it.each(['5', '6', '7', '9', '15', '16', '31', '-1', '00', 'x'])('refuses the index %s', (index) => {
    expectRefused(() => parsePcrValues({ ...PCRS, [index]: hex(1) }, 'p'), `p.${index}`);
  });

  it.each([
    ['odd length', hex(1).slice(1)],
    ['47 bytes', hex(1, 47)],
    ['49 bytes', hex(1, 49)],
    ['16 bytes', hex(1, 16)],
    ['upper case', 'AB'.repeat(48)],
    ['not hex', 'g'.repeat(96)],
    ['0x prefix', `0x${hex(1).slice(2)}`],
    ['empty', ''],
    ['trailing newline', `${hex(1)}\n`],
    ['a number', 1],
    ['null', null],
  ])('refuses a PCR value: %s', (_name, value) => {
    expectRefused(() => parsePcrValues({ ...PCRS, 1: value }, 'p'), 'p.1');
  });

  it('refuses PCRs of different lengths, naming the first that differs', () => {
    expectRefused(() => parsePcrValues({ 0: hex(1), 1: hex(2, 32), 2: hex(3, 32) }, 'p'), 'p.1');
    expectRefused(() => parsePcrValues({ 0: hex(1, 64), 1: hex(2, 64), 2: hex(3, 64), 8: hex(4) }, 'p'), 'p.8');
  });

  it.each([null, [], 'pcrs', 3])('refuses a non-object %j', (value) => {
    expectRefused(() => parsePcrValues(value, 'p'), 'p');
  });
});

describe('parseRevocations', () => {
  it('fills absent lists with empty ones', () => {
    expect(parseRevocations({})).toStrictEqual({ pcr0: [], instances: [], baselines: [] });
  });

  it('keeps every entry of every list', () => {
    const doc = { pcr0: [hex(1), hex(2, 32), hex(3, 64)], instances: ['i-0123456789abcdef0', 'i-01234567'], baselines: ['build-1', 'B.2'] };
    expect(parseRevocations(doc)).toStrictEqual(doc);
    expect(parseRevocations({ pcr0: [hex(1)] })).toStrictEqual({ pcr0: [hex(1)], instances: [], baselines: [] });
    expect(parseRevocations({ instances: ['i-01234567'] })).toStrictEqual({ pcr0: [], instances: ['i-01234567'], baselines: [] });
    expect(parseRevocations({ baselines: ['b'] })).toStrictEqual({ pcr0: [], instances: [], baselines: ['b'] });
  });

  it.each([null, undefined, [], 'pcr0', 0])('refuses a non-object list %j', (value) => {
    expectRefused(() => parseRevocations(value), 'revocations');
  });

  it('names the path given by the caller', () => {
    expectRefused(() => parseRevocations({ pcr0: 'x' }, 'store.revocations'), 'store.revocations.pcr0');
  });

  it.each([
    // A list that is not a list, or an entry in the wrong format, must not be read as "nothing revoked".
    [{ pcr0: hex(1) }, 'revocations.pcr0'],
    [{ pcr0: null }, 'revocations.pcr0'],
    [{ pcr0: { 0: hex(1) } }, 'revocations.pcr0'],
    [{ pcr0: [hex(1), 'zz'] }, 'revocations.pcr0[1]'],
    [{ pcr0: ['AB'.repeat(48)] }, 'revocations.pcr0[0]'],
    [{ pcr0: [hex(1, 47)] }, 'revocations.pcr0[0]'],
    [{ pcr0: [1] }, 'revocations.pcr0[0]'],
    [{ instances: 'i-0123456789abcdef0' }, 'revocations.instances'],
    [{ instances: ['i-0123456789abcdef0', 'host-1'] }, 'revocations.instances[1]'],
    [{ instances: ['I-0123456789abcdef0'] }, 'revocations.instances[0]'],
    [{ instances: ['i-0123456'] }, 'revocations.instances[0]'],
    [{ baselines: 'build-1' }, 'revocations.baselines'],
    [{ baselines: ['build-1', '../x'] }, 'revocations.baselines[1]'],
    [{ baselines: [''] }, 'revocations.baselines[0]'],
    [{ pcr0: [], PCR0: [hex(1)] }, 'revocations.PCR0'],
    [{ instance: ['i-0123456789abcdef0'] }, 'revocations.instance'],
  ])('refuses %j', (value, path) => {
    expectRefused(() => parseRevocations(value), path);
  });
});
