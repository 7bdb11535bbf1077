/**
 * Baseline operations called directly, as an admin API would: typed results,
 * and refusals as OperationError codes (no CLI in between).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildEif, expectedPcrs, type EifParts } from '../support/eif.js';
import { allowRuleFrom, approveBaselineFile, checkRebuild, generateBaselineKey, readBaseline, recordBaseline } from '../../broker/ops/baselines.js';
import { OperationError, type OperationErrorCode } from '../../broker/ops/errors.js';

let dir: string;
let parts: EifParts;
let eif: string;
const now = new Date('2026-01-02T03:04:05Z');

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-ops-'));
  parts = { kernel: randomBytes(1024), cmdline: Buffer.from('console=ttyS0'), ramdisks: [randomBytes(512), randomBytes(768)] };
  eif = join(dir, 'app.eif');
  writeFileSync(eif, buildEif(parts));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function refusal(promise: Promise<unknown>): Promise<OperationErrorCode> {
  const err = await promise.then(
    () => expect.fail('expected an OperationError'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(OperationError);
  return (err as OperationError).code;
}

describe('baseline operations', () => {
  it('record, check, approve and keygen return typed results; nothing is overwritten', async () => {
    const baselines = join(dir, 'baselines');
    const { kid } = await generateBaselineKey(join(dir, 'keys', 'admin.jwk'));
    expect(kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await refusal(generateBaselineKey(join(dir, 'keys', 'admin.jwk')))).toBe('ALREADY_EXISTS');

    const { path, baseline } = await recordBaseline({ image: eif, name: 'b1', dir: baselines, builder: 'test', signKeyFile: join(dir, 'keys', 'admin.jwk'), now });
    expect(path).toBe(join(baselines, 'b1.json'));
    expect(baseline).toMatchObject({ name: 'b1', pcrs: expectedPcrs(parts), source: 'eif', createdAt: now.toISOString(), approvals: [] });
    expect((await readBaseline(path)).signature).toBe(baseline.signature);
    expect(await refusal(recordBaseline({ image: eif, name: 'b1', dir: baselines, builder: 'test', now }))).toBe('ALREADY_EXISTS');
    expect(await refusal(recordBaseline({ image: eif, name: 'b2', dir: baselines, builder: 'test', signKeyFile: join(dir, 'none.jwk'), now }))).toBe('KEY_UNUSABLE');

    expect((await checkRebuild(eif, path)).differ).toEqual([]);
    const first = await approveBaselineFile(path, join(dir, 'keys', 'admin.jwk'), now);
    expect([first.added, first.approval.kid, first.baseline.approvals.length]).toEqual([true, kid, 1]);
    const again = await approveBaselineFile(path, join(dir, 'keys', 'admin.jwk'), now);
    expect([again.added, JSON.parse(readFileSync(path, 'utf8')).approvals.length]).toEqual([false, 1]);
  });

  it('an allow rule comes from a baseline (named) or nitro-cli output (plain), detected by content', async () => {
    const { path } = await recordBaseline({ image: eif, name: 'rule', dir: join(dir, 'rules'), builder: 'test', now });
    const named = await allowRuleFrom(path);
    expect(named.rule).toEqual({ pcrs: expectedPcrs(parts), baseline: 'rule' });
    expect(named.baseline?.name).toBe('rule');

    const pcrs = expectedPcrs(parts);
    const nitro = join(dir, 'nitro.json');
    writeFileSync(nitro, JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: pcrs['0'], PCR1: pcrs['1'], PCR2: pcrs['2'] } }));
    expect(await allowRuleFrom(nitro)).toEqual({ rule: { pcrs: { 0: pcrs['0'], 1: pcrs['1'], 2: pcrs['2'] } } });

    writeFileSync(join(dir, 'other.json'), '{"hello":1}');
    writeFileSync(join(dir, 'broken-baseline.json'), '{"formatVersion":1}');
    expect(await refusal(allowRuleFrom(join(dir, 'other.json')))).toBe('INPUT_INVALID');
    expect(await refusal(allowRuleFrom(join(dir, 'broken-baseline.json')))).toBe('BASELINE_INVALID');
    expect(await refusal(allowRuleFrom(join(dir, 'missing.json')))).toBe('INPUT_UNREADABLE');
    // JSON that is not an object (null crashed with a TypeError before): a typed refusal, never a 500 for an admin API.
    for (const [file, text] of [['null.json', 'null'], ['array.json', '[]'], ['number.json', '7']] as const) {
      writeFileSync(join(dir, file), text);
      expect(await refusal(allowRuleFrom(join(dir, file)))).toBe('INPUT_INVALID');
    }
    expect(await refusal(readBaseline(join(dir, 'missing.json')))).toBe('INPUT_UNREADABLE');
  });
});
