import { describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import {
  approveBaseline,
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

const h = (b: number): string => b.toString(16).padStart(2, '0').repeat(48);
const base: Baseline = parseBaseline({
  formatVersion: 1,
  name: 'build-7',
  pcrs: { 0: h(1), 1: h(2), 2: h(3) },
  builder: 'ci',
  createdAt: '2026-11-01T00:00:00.000Z',
  source: 'eif',
  approvals: [],
});
const ed = (): ReturnType<typeof generateKeyPairSync> => generateKeyPairSync('ed25519');

describe('baselines', () => {
  it('canonical JSON sorts keys at every level and ignores undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { z: 1, y: undefined, x: 0 }], c: 'é' } })).toBe('{"a":{"c":"é","d":[2,{"x":0,"z":1}]},"b":1}');
  });

  it('formats with a fixed key order and parses back identically', () => {
    const text = formatBaseline(base);
    expect(parseBaseline(JSON.parse(text))).toEqual(base);
    expect(text.indexOf('"formatVersion"')).toBeLessThan(text.indexOf('"pcrs"'));
  });

  it('a CI signature verifies only for the unchanged body and the right key', async () => {
    const ci = ed();
    const signed = { ...base, signature: await signBaseline(base, ci.privateKey) };
    expect(await verifyBaselineSignature(signed, ci.publicKey)).toBe(true);
    expect(await verifyBaselineSignature({ ...signed, pcrs: { ...signed.pcrs, 0: h(9) } }, ci.publicKey)).toBe(false);
    expect(await verifyBaselineSignature(signed, ed().publicKey)).toBe(false);
    expect(await verifyBaselineSignature(base, ci.publicKey)).toBe(false);
  });

  it('counts valid approvals by distinct configured admin keys only', async () => {
    const [alice, bob, mallory] = [ed(), ed(), ed()];
    const admins = [alice.publicKey, bob.publicKey];
    const a = await approveBaseline(base, alice.privateKey);
    const b = await approveBaseline(base, bob.privateKey);
    const m = await approveBaseline(base, mallory.privateKey);
    expect(await countApprovals({ ...base, approvals: [a] }, admins)).toBe(1);
    expect(await countApprovals({ ...base, approvals: [a, a, a] }, admins)).toBe(1);
    expect(await countApprovals({ ...base, approvals: [a, b, m] }, admins)).toBe(2);
    expect(await countApprovals({ ...base, approvals: [m] }, admins)).toBe(0);
    // An approval of another baseline, of an edited one, or with a damaged signature counts for nothing.
    const other = await approveBaseline({ ...base, name: 'build-8' }, alice.privateKey);
    expect(await countApprovals({ ...base, approvals: [other] }, admins)).toBe(0);
    expect(await countApprovals({ ...base, builder: 'edited', approvals: [a] }, admins)).toBe(0);
    const damaged = { ...a, jws: `${a.jws.slice(0, -4)}AAAA` };
    expect(await countApprovals({ ...base, approvals: [damaged] }, admins)).toBe(0);
    // A valid signature presented under another admin's kid does not verify.
    expect(await countApprovals({ ...base, approvals: [{ kid: b.kid, jws: a.jws }] }, admins)).toBe(0);
    expect(baselineDigest({ ...base, approvals: [a] } as Baseline)).toBe(baselineDigest(base));
  });

  it.each([
    ['PCR5', { pcrs: { 0: h(1), 1: h(2), 2: h(3), 5: h(1) } }, 'baseline.pcrs.5'],
    ['short PCR', { pcrs: { 0: h(1).slice(2), 1: h(2), 2: h(3) } }, 'baseline.pcrs.0'],
    ['missing PCR2', { pcrs: { 0: h(1), 1: h(2) } }, 'baseline.pcrs.2'],
    ['bad version', { formatVersion: 2 }, 'baseline.formatVersion'],
    ['bad name', { name: '../x' }, 'baseline.name'],
    ['unknown field', { extra: 1 }, 'baseline.extra'],
    ['bad approval', { approvals: [{ kid: 'x', jws: 'y' }] }, 'baseline.approvals[0].kid'],
    ['bad source', { source: 'docker' }, 'baseline.source'],
  ])('rejects %s', (_name, change, path) => {
    try {
      parseBaseline({ ...JSON.parse(formatBaseline(base)), ...change });
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(SchemaError);
      expect((err as SchemaError).path).toBe(path);
    }
  });
});
