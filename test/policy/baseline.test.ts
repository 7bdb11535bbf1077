// Baselines: what CI recorded for a build, and the admin approvals that make
// it usable. The parser is the gate for a file anyone can edit in review, the
// canonical form is what gets signed, and an approval must count only for the
// exact body it signed. Every baseline here is built inside the test that uses
// it (a parse at import time that throws would hide the whole file).
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CompactSign, calculateJwkThumbprint, decodeProtectedHeader, exportJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  approveBaseline,
  baselineBody,
  baselineDigest,
  canonicalJson,
  countApprovals,
  formatBaseline,
  parseBaseline,
  signBaseline,
  verifyBaselineSignature,
  type Baseline,
} from '../../broker/policy/baseline.js';
import { SchemaError } from '../../broker/policy/schema.js';

type Doc = Record<string, unknown>;

const h = (b: number, bytes = 48): string => b.toString(16).padStart(2, '0').repeat(bytes);
const TIME = '2026-11-01T00:00:00.000Z';
const KID = 'A'.repeat(21) + '-_' + 'z'.repeat(20);
const JWS = 'eyJhbGciOiJFZERTQSJ9.eyJiIjoxfQ.c2ln-_';

function minimal(): Doc {
  return { formatVersion: 1, name: 'build-7', pcrs: { 0: h(1), 1: h(2), 2: h(3) }, builder: 'ci', createdAt: TIME, source: 'eif' };
}

function full(): Doc {
  return {
    formatVersion: 1,
    name: 'build-7',
    pcrs: { 0: h(1), 1: h(2), 2: h(3), 8: h(4) },
    eifSha384: h(5),
    imageDigest: 'registry.example.com/app@sha256:0123',
    gitCommit: '0123abc',
    builder: 'ci job 17 (user@host)',
    createdAt: TIME,
    source: 'nitro-cli',
    signature: JWS,
    approvals: [{ kid: KID, jws: JWS }],
  };
}

const ed = (): { publicKey: KeyObject; privateKey: KeyObject } => generateKeyPairSync('ed25519');
const thumbprint = async (key: KeyObject): Promise<string> => calculateJwkThumbprint(await exportJWK(key), 'sha256');
const payloadOf = (jws: string): unknown => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8'));

function expectRefused(fn: () => unknown, path: string): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SchemaError);
    expect((err as SchemaError).code).toBe('SCHEMA_INVALID');
    expect((err as SchemaError).path).toBe(path);
    return;
  }
  expect.unreachable(`accepted, expected a refusal at ${path}`);
}

const withField = (field: string, value: unknown, doc = minimal()): Doc => ({ ...doc, [field]: value });
const withPcr = (index: string, value: unknown): Doc => ({ ...minimal(), pcrs: { ...(minimal().pcrs as Doc), [index]: value } });

describe('canonicalJson', () => {
  it.each([
    [{ b: 1, c: 2, a: 3 }, '{"a":3,"b":1,"c":2}'],
    [{ c: 1, a: 2, b: 3, d: 4 }, '{"a":2,"b":3,"c":1,"d":4}'],
    [{ z: 0, y: 0, x: 0, w: 0, v: 0 }, '{"v":0,"w":0,"x":0,"y":0,"z":0}'],
    [{ a: 1, b: 2, c: 3 }, '{"a":1,"b":2,"c":3}'],
    [{ b: 1, a: 2, B: 3, _: 4 }, '{"B":3,"_":4,"a":2,"b":1}'],
    [{ ab: 1, a: 2, b: 3 }, '{"a":2,"ab":1,"b":3}'],
    [{}, '{}'],
    [[], '[]'],
    [[3, 1, 2], '[3,1,2]'],
    [[{ b: 1, a: 2 }, [null, 'x']], '[{"a":2,"b":1},[null,"x"]]'],
    [null, 'null'],
    [0, '0'],
    [false, 'false'],
    ['a"b\n', '"a\\"b\\n"'],
    [{ a: undefined, b: null }, '{"b":null}'],
    [{ a: { c: 1, b: { e: 1, d: 2 } } }, '{"a":{"b":{"d":2,"e":1},"c":1}}'],
  ])('%j -> %s', (value, text) => {
    expect(canonicalJson(value)).toBe(text);
  });
});

describe('parseBaseline', () => {
  it('returns exactly what it accepted, without absent optional fields', () => {
    const parsed = parseBaseline(minimal());
    expect(parsed).toStrictEqual({ ...minimal(), approvals: [] });
    for (const key of ['eifSha384', 'imageDigest', 'gitCommit', 'signature']) expect(key in parsed).toBe(false);
    expect('8' in parsed.pcrs).toBe(false);
  });

  it('keeps every optional field it accepts', () => {
    expect(parseBaseline(full())).toStrictEqual(full());
  });

  it('names the path given by the caller', () => {
    expectRefused(() => parseBaseline(withField('formatVersion', 2), 'pcr-baselines/x.json'), 'pcr-baselines/x.json.formatVersion');
  });

  it.each([null, undefined, 0, '', 'baseline', 7, true, [], [minimal()]])('refuses a non-object %j', (value) => {
    expectRefused(() => parseBaseline(value), 'baseline');
  });

  it.each(['extra', 'pcr', 'approval', 'kid'])('refuses the unknown field %s', (field) => {
    expectRefused(() => parseBaseline(withField(field, 'x')), `baseline.${field}`);
  });

  it.each([
    ['formatVersion', [2, 0, '1', null, undefined]],
    ['name', ['', '../x', '.x', 'a'.repeat(129), 1, undefined]],
    ['builder', ['', 'b'.repeat(301), 'a\nb', 'a\n', '\nb', 1, undefined]],
    ['createdAt', ['2026-11-01', '2026-11-01T00:00:00+00:00', 1, undefined]],
    ['source', ['docker', 'EIF', 'xeif', 'eifx', 'nitro-clix', 'xnitro-cli', '', 1, undefined]],
    ['eifSha384', [h(5, 32), h(5, 64), 'AB'.repeat(48), `${h(5)}\n`, 1, null]],
    ['imageDigest', ['', 'i'.repeat(301), 'a b', ' a', 'a ', 'a\n', 'é', 'a"b', 1, null]],
    ['gitCommit', ['012345', '0'.repeat(65), '0123ABC', '0123abg', ' 0123abc', '0123abc ', 1, null]],
    ['signature', ['', 'a.b', 'a..c', '.b.c', 'a.b.', 'a.b.c.d', 'a b.c.d', 'a.b c.d', 'a.b.c d', 'a=.b.c', ' a.b.c', 'a.b.c ', 1, null]],
  ])('%s: refuses each malformed value', (field, values) => {
    for (const value of values) expectRefused(() => parseBaseline(withField(field, value)), `baseline.${field}`);
  });

  it.each([
    ['name', ['a', 'A.b_c-9', 'n'.repeat(128)]],
    ['builder', ['c', 'b'.repeat(300), 'ci job 17 (user@host) é']],
    ['source', ['eif', 'nitro-cli']],
    ['imageDigest', ['a', 'i'.repeat(300), 'reg.io:5000/team/app@sha256:ab+c-d_e']],
    ['gitCommit', ['0123abc', 'f'.repeat(64), '0'.repeat(40)]],
    ['signature', ['a.b.c', 'ab-_.c9D.-_x', JWS]],
    ['eifSha384', [h(0xfe)]],
  ])('%s: accepts each well-formed value', (field, values) => {
    for (const value of values) expect((parseBaseline(withField(field, value)) as unknown as Doc)[field]).toBe(value);
  });

  describe('pcrs', () => {
    it.each([undefined, null, 'pcrs', 7])('refuses %j', (value) => {
      expectRefused(() => parseBaseline(withField('pcrs', value)), 'baseline.pcrs');
    });
    it.each(['3', '4', '5', '9', '16', 'x'])('refuses PCR%s (only 0, 1, 2 and 8 are recorded)', (index) => {
      expectRefused(() => parseBaseline(withPcr(index, h(1))), `baseline.pcrs.${index}`);
    });
    it.each(['0', '1', '2'])('requires PCR%s', (index) => {
      const doc = minimal();
      const pcrs = { ...(doc.pcrs as Doc) };
      delete pcrs[index];
      expectRefused(() => parseBaseline({ ...doc, pcrs }), `baseline.pcrs.${index}`);
    });
    it.each(['0', '1', '2', '8'])('PCR%s must be SHA-384 lower-case hex', (index) => {
      for (const value of [h(1, 32), h(1, 64), h(1, 47), 'AB'.repeat(48), `${h(1)}\n`, 1, null]) expectRefused(() => parseBaseline(withPcr(index, value)), `baseline.pcrs.${index}`);
    });
    it('keeps PCR8 when given', () => {
      expect(parseBaseline(withPcr('8', h(9))).pcrs).toStrictEqual({ 0: h(1), 1: h(2), 2: h(3), 8: h(9) });
    });
  });

  describe('approvals', () => {
    it.each(['x', {}, null, 1])('refuses a non-array %j', (value) => {
      expectRefused(() => parseBaseline(withField('approvals', value)), 'baseline.approvals');
    });
    it.each([
      [[null], 'baseline.approvals[0].kid'],
      [['x'], 'baseline.approvals[0].kid'],
      [[{ jws: JWS }], 'baseline.approvals[0].kid'],
      [[{ kid: KID }], 'baseline.approvals[0].jws'],
      [[{ kid: KID, jws: JWS }, { kid: KID.slice(1), jws: JWS }], 'baseline.approvals[1].kid'],
      [[{ kid: `${KID}A`, jws: JWS }], 'baseline.approvals[0].kid'],
      [[{ kid: `${KID.slice(1)}.`, jws: JWS }], 'baseline.approvals[0].kid'],
      [[{ kid: ` ${KID.slice(1)}`, jws: JWS }], 'baseline.approvals[0].kid'],
      [[{ kid: KID, jws: 'a.b' }], 'baseline.approvals[0].jws'],
      [[{ kid: KID, jws: 'a.b.c.d' }], 'baseline.approvals[0].jws'],
      [[{ kid: KID, jws: 'a b.c.d' }], 'baseline.approvals[0].jws'],
      [[{ kid: KID, jws: 'a.b c.d' }], 'baseline.approvals[0].jws'],
      [[{ kid: KID, jws: 'a.b.c d' }], 'baseline.approvals[0].jws'],
      [[{ kid: KID, jws: ' a.b.c' }], 'baseline.approvals[0].jws'],
      [[{ kid: KID, jws: 'a.b.c ' }], 'baseline.approvals[0].jws'],
    ])('refuses %j', (approvals, path) => {
      expectRefused(() => parseBaseline(withField('approvals', approvals)), path);
    });
    it('keeps each approval as {kid, jws}', () => {
      const approvals = [{ kid: KID, jws: 'ab-_.c9D.-_x' }, { kid: 'b'.repeat(43), jws: 'a.b.c' }];
      expect(parseBaseline(withField('approvals', approvals)).approvals).toStrictEqual(approvals);
    });
  });
});

describe('baselineBody, baselineDigest and formatBaseline', () => {
  it('the body is the signed fields only, without absent ones', () => {
    expect(Object.keys(baselineBody(parseBaseline(minimal())))).toEqual(['formatVersion', 'name', 'pcrs', 'builder', 'createdAt', 'source']);
    const all = full();
    delete all.signature;
    delete all.approvals;
    expect(baselineBody(parseBaseline(full()))).toStrictEqual(all);
  });

  it('the digest is SHA-256 of the canonical body, blind to signature and approvals', () => {
    const canonical = `{"builder":"ci","createdAt":"${TIME}","formatVersion":1,"name":"build-7","pcrs":{"0":"${h(1)}","1":"${h(2)}","2":"${h(3)}"},"source":"eif"}`;
    const expected = createHash('sha256').update(canonical).digest('hex');
    expect(baselineDigest(parseBaseline(minimal()))).toBe(expected);
    expect(baselineDigest(parseBaseline({ ...minimal(), signature: JWS, approvals: [{ kid: KID, jws: JWS }] }))).toBe(expected);
    expect(baselineDigest(parseBaseline(withField('builder', 'ci2')))).not.toBe(expected);
  });

  it('formats every field in a fixed order, pcrs by index, whatever the input order', () => {
    const b = parseBaseline(full());
    const shuffled = Object.fromEntries(Object.entries(b).reverse()) as unknown as Baseline;
    const expected = [
      '{',
      '  "formatVersion": 1,',
      '  "name": "build-7",',
      '  "pcrs": {',
      `    "0": "${h(1)}",`,
      `    "1": "${h(2)}",`,
      `    "2": "${h(3)}",`,
      `    "8": "${h(4)}"`,
      '  },',
      `  "eifSha384": "${h(5)}",`,
      '  "imageDigest": "registry.example.com/app@sha256:0123",',
      '  "gitCommit": "0123abc",',
      '  "builder": "ci job 17 (user@host)",',
      `  "createdAt": "${TIME}",`,
      '  "source": "nitro-cli",',
      `  "signature": "${JWS}",`,
      '  "approvals": [',
      '    {',
      `      "kid": "${KID}",`,
      `      "jws": "${JWS}"`,
      '    }',
      '  ]',
      '}',
      '',
    ].join('\n');
    expect(formatBaseline(shuffled)).toBe(expected);
    // An empty signature is no signature: it is not written.
    expect(formatBaseline({ ...parseBaseline(minimal()), signature: '' })).toBe(formatBaseline(parseBaseline(minimal())));
    expect(formatBaseline(parseBaseline(minimal()))).toBe(
      `{\n  "formatVersion": 1,\n  "name": "build-7",\n  "pcrs": {\n    "0": "${h(1)}",\n    "1": "${h(2)}",\n    "2": "${h(3)}"\n  },\n  "builder": "ci",\n  "createdAt": "${TIME}",\n  "source": "eif",\n  "approvals": []\n}\n`,
    );
  });
});

describe('signatures and approvals', () => {
  it('a CI signature is an EdDSA JWS naming the key, over the canonical body', async () => {
    const ci = ed();
    const b = parseBaseline(minimal());
    const signature = await signBaseline(b, ci.privateKey);
    expect(decodeProtectedHeader(signature)).toStrictEqual({ alg: 'EdDSA', kid: await thumbprint(ci.publicKey), typ: 'keygate-baseline+jws' });
    expect(Buffer.from(signature.split('.')[1]!, 'base64url').toString('utf8')).toBe(canonicalJson(baselineBody(b)));
    // Approvals are not part of what the CI key signed.
    expect(await verifyBaselineSignature({ ...b, signature, approvals: [{ kid: KID, jws: JWS }] }, ci.publicKey)).toBe(true);
    expect(await verifyBaselineSignature({ ...b, signature, builder: 'other' }, ci.publicKey)).toBe(false);
  });

  it('a signature under another JWS algorithm name is refused even with the right key', async () => {
    const ci = ed();
    const b = parseBaseline(minimal());
    const payload = new TextEncoder().encode(canonicalJson(baselineBody(b)));
    const other = await new CompactSign(payload).setProtectedHeader({ alg: 'Ed25519' }).sign(ci.privateKey);
    expect(await verifyBaselineSignature({ ...b, signature: other }, ci.publicKey)).toBe(false);
    const same = await new CompactSign(payload).setProtectedHeader({ alg: 'EdDSA' }).sign(ci.privateKey);
    expect(await verifyBaselineSignature({ ...b, signature: same }, ci.publicKey)).toBe(true);
  });

  it('an approval signs the name, the digest and the time', async () => {
    const admin = ed();
    const b = parseBaseline(minimal());
    const at = new Date('2026-11-02T03:04:05.678Z');
    const approval = await approveBaseline(b, admin.privateKey, at);
    expect(approval.kid).toBe(await thumbprint(admin.publicKey));
    expect(approval.kid).toMatch(/^[\w-]{43}$/);
    expect(decodeProtectedHeader(approval.jws)).toStrictEqual({ alg: 'EdDSA', kid: approval.kid, typ: 'keygate-approval+jws' });
    expect(payloadOf(approval.jws)).toStrictEqual({ baseline: 'build-7', digest: baselineDigest(b), approvedAt: '2026-11-02T03:04:05.678Z' });
    // By default, now.
    const before = Date.now();
    const fresh = payloadOf((await approveBaseline(b, admin.privateKey)).jws) as { approvedAt: string };
    expect(Date.parse(fresh.approvedAt)).toBeGreaterThanOrEqual(before);
    expect(Date.parse(fresh.approvedAt)).toBeLessThanOrEqual(Date.now());
    // What it produces parses back.
    expect(parseBaseline({ ...minimal(), approvals: [approval] }).approvals).toStrictEqual([approval]);
  });

  it('an approval under another JWS algorithm name counts for nothing', async () => {
    const admin = ed();
    const b = parseBaseline(minimal());
    const kid = await thumbprint(admin.publicKey);
    const claims = new TextEncoder().encode(JSON.stringify({ baseline: b.name, digest: baselineDigest(b), approvedAt: TIME }));
    const other = await new CompactSign(claims).setProtectedHeader({ alg: 'Ed25519', kid }).sign(admin.privateKey);
    expect(await countApprovals({ ...b, approvals: [{ kid, jws: other }] }, [admin.publicKey])).toBe(0);
    const same = await new CompactSign(claims).setProtectedHeader({ alg: 'EdDSA', kid }).sign(admin.privateKey);
    expect(await countApprovals({ ...b, approvals: [{ kid, jws: same }] }, [admin.publicKey])).toBe(1);
  });

  it('counts distinct admins, whatever order and repetitions, and only for this digest', async () => {
    const [alice, bob, carol] = [ed(), ed(), ed()];
    const b = parseBaseline(minimal());
    const [a, c] = [await approveBaseline(b, alice.privateKey), await approveBaseline(b, carol.privateKey)];
    const admins = [alice.publicKey, bob.publicKey, carol.publicKey];
    expect(await countApprovals({ ...b, approvals: [] }, admins)).toBe(0);
    expect(await countApprovals({ ...b, approvals: [a, c, a, c] }, admins)).toBe(2);
    expect(await countApprovals({ ...b, approvals: [a, c] }, [])).toBe(0);
    expect(await countApprovals({ ...b, approvals: [a, c] }, [carol.publicKey])).toBe(1);
    // A payload that is not the expected claims is not an approval.
    const kid = await thumbprint(bob.publicKey);
    for (const body of ['null', '"x"', '{}', JSON.stringify({ baseline: b.name }), JSON.stringify({ digest: baselineDigest(b) })]) {
      const jws = await new CompactSign(new TextEncoder().encode(body)).setProtectedHeader({ alg: 'EdDSA', kid }).sign(bob.privateKey);
      expect(await countApprovals({ ...b, approvals: [{ kid, jws }] }, admins)).toBe(0);
    }
  });
});
