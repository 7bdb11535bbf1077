/**
 * Build measurements end to end: describe-eif, record, record --check,
 * approve (k of n), bind --baseline, and the broker honouring approvals.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { cli } from '../support/cli.js';
import { buildEif, expectedPcrs, type EifParts } from '../support/eif.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { TestEnclave, valueOf } from '../support/enclave.js';
import { startTestBroker } from '../support/broker.js';
import { FileStore } from '../../broker/store/file-store.js';
import { parseBaseline } from '../../broker/policy/baseline.js';

let dir: string;
let pki: TestPki;
let parts: EifParts;
let eif: string;
/** In process, in `dir` (baselines default to ./pcr-baselines, keys are given relative to it). */
const run = (args: string[], input?: string): ReturnType<typeof cli> => cli(args, input, dir);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-baselines-'));
  pki = await createTestPki(Date.now());
  parts = { kernel: randomBytes(4096), cmdline: Buffer.from('console=ttyS0'), ramdisks: [randomBytes(2048), randomBytes(8192)] };
  eif = join(dir, 'app.eif');
  writeFileSync(eif, buildEif(parts));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('keygate describe-eif', () => {
  it('prints the PCRs, and nitro-cli-shaped JSON', async () => {
    const human = await run(['describe-eif', eif]);
    expect(human.status).toBe(0);
    expect(human.stdout).toContain(`PCR0  ${expectedPcrs(parts)['0']}`);
    const json = JSON.parse((await run(['describe-eif', eif, '--json'])).stdout) as { valid: boolean; Measurements: Record<string, string> };
    expect(json.valid).toBe(true);
    expect(json.Measurements.PCR2).toBe(expectedPcrs(parts)['2']);
  });
  it('exits 1 on a corrupt image and 2 on a missing one', async () => {
    const bad = join(dir, 'bad.eif');
    const bytes = buildEif(parts);
    bytes[2000]! ^= 0xff;
    writeFileSync(bad, bytes);
    expect((await run(['describe-eif', bad])).status).toBe(1);
    expect((await run(['describe-eif', bad])).stdout).toMatch(/CRC mismatch/);
    expect((await run(['describe-eif', join(dir, 'none.eif')])).status).toBe(2);
  });
});

describe('keygate record / approve / bind --baseline', () => {
  it('records a signed baseline with provenance, readable and stable', async () => {
    expect((await run(['keygen', '--out', 'keys/ci.jwk'])).status).toBe(0);
    const r = await run(['record', '--eif', eif, '--name', 'build-42', '--image-digest', 'sha256:' + 'ab'.repeat(32), '--commit', 'c0ffee1234567', '--sign-key', 'keys/ci.jwk', '--builder', 'ci job 7']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const text = readFileSync(join(dir, 'pcr-baselines', 'build-42.json'), 'utf8');
    const b = parseBaseline(JSON.parse(text));
    expect(b.pcrs).toEqual(expectedPcrs(parts));
    expect(b).toMatchObject({ name: 'build-42', gitCommit: 'c0ffee1234567', builder: 'ci job 7', source: 'eif', approvals: [] });
    expect(b.signature).toMatch(/^ey/);
    expect(Object.keys(JSON.parse(text) as object)).toEqual(['formatVersion', 'name', 'pcrs', 'eifSha384', 'imageDigest', 'gitCommit', 'builder', 'createdAt', 'source', 'signature', 'approvals']);
    expect((await run(['record', '--eif', eif, '--name', 'build-42'])).stderr).toMatch(/exists/);
  });

  it('records from nitro-cli JSON too', async () => {
    const p = expectedPcrs(parts);
    writeFileSync(join(dir, 'build.json'), JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: p['0']!.toUpperCase(), PCR1: p['1'], PCR2: p['2'] } }));
    expect((await run(['record', '--nitro-cli-json', 'build.json', '--name', 'from-cli'])).status).toBe(0);
    expect(parseBaseline(JSON.parse(readFileSync(join(dir, 'pcr-baselines', 'from-cli.json'), 'utf8'))).pcrs).toEqual(p);
  });

  it('record --check passes for a reproduced image and names the PCRs that differ otherwise', async () => {
    const same = join(dir, 'rebuilt.eif');
    writeFileSync(same, buildEif(parts));
    expect((await run(['record', '--check', same, '--baseline', 'build-42'])).stdout).toMatch(/reproduced/);
    const changed = join(dir, 'changed.eif');
    writeFileSync(changed, buildEif({ ...parts, ramdisks: [parts.ramdisks[0]!, randomBytes(8192)] }));
    const r = await run(['record', '--check', changed, '--baseline', 'build-42']);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/PCR0 differs/);
    expect(r.stdout).toMatch(/PCR2 differs/);
    expect(r.stdout).not.toMatch(/PCR1 differs/);
  });

  it('the broker uses a baseline binding only with k valid approvals, and never after the baseline is edited', async () => {
    expect((await run(['keygen', '--out', 'keys/alice.jwk'])).status).toBe(0);
    expect((await run(['keygen', '--out', 'keys/bob.jwk'])).status).toBe(0);
    const store = ['--store', join(dir, 'store'), '--state', join(dir, 'state')];
    expect((await run(['bind', 'db-password', '--baseline', 'build-42', '--value-stdin', ...store], 'pw-42')).status).toBe(0);

    const broker = await startTestBroker(dir, [pki.root.pem], { adminKeys: [join(dir, 'keys/alice.jwk.pub'), join(dir, 'keys/bob.jwk.pub')], approvalsRequired: 2 });
    try {
      const pcrs = new Map<number, Uint8Array>();
      for (let i = 0; i < 16; i++) pcrs.set(i, new Uint8Array(48));
      for (const [i, v] of Object.entries(expectedPcrs(parts))) pcrs.set(Number(i), Buffer.from(v, 'hex'));
      const enclave = new TestEnclave(pki, broker.url, pcrs);
      const jwk = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
      const audit = (): string => readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8');

      expect((await enclave.request(['db-password'])).body.error?.code).toBe('POLICY_DENIED');
      expect((await run(['approve', 'build-42', '--key', 'keys/alice.jwk'])).stdout).toMatch(/1 approval/);
      expect((await run(['approve', 'build-42', '--key', 'keys/alice.jwk'])).stdout).toMatch(/already carries/);
      expect((await run(['bind', 'db-password', '--baseline', 'build-42', '--value-stdin', ...store], 'pw-42')).status).toBe(0);
      expect((await enclave.request(['db-password'])).body.error?.code).toBe('POLICY_DENIED'); // 1 of 2
      expect((await run(['approve', 'build-42', '--key', 'keys/bob.jwk'])).stdout).toMatch(/2 approval/);
      expect((await run(['bind', 'db-password', '--baseline', 'build-42', '--value-stdin', ...store], 'pw-42')).status).toBe(0);
      const ok = await enclave.request(['db-password']);
      expect(ok.status).toBe(200);
      expect(valueOf(await enclave.open(ok.body.secrets![0]!, jwk))).toBe('pw-42');

      // Someone edits the stored baseline (say, to widen it): the approvals no longer match its digest.
      const adminStore = await FileStore.open(join(dir, 'store'));
      const stored = adminStore.snapshot().baselines.get('build-42')!;
      await adminStore.update((_s, tx) => tx.putBaseline({ ...stored, builder: 'someone else' }));
      expect((await enclave.request(['db-password'])).body.error?.code).toBe('POLICY_DENIED');
      expect(audit()).toContain('BASELINE_NOT_APPROVED');

      // A revoked baseline is refused even with its approvals restored.
      await adminStore.update((_s, tx) => tx.putBaseline(stored));
      expect((await enclave.request(['db-password'])).status).toBe(200);
      expect((await run(['revoke', '--baseline', 'build-42', ...store])).status).toBe(0);
      expect((await enclave.request(['db-password'])).body.error?.code).toBe('REVOKED');
    } finally {
      await broker.close();
    }
  });

  it.each([
    ['approve without a key', ['approve', 'build-42'], /--key ADMIN_KEY/],
    ['approve an unknown baseline (no file, not stored)', ['approve', 'nope', '--key', 'keys/alice.jwk'], /BASELINE_NOT_FOUND/],
    ['approve a missing baseline file', ['approve', 'pcr-baselines/nope.json', '--key', 'keys/alice.jwk'], /cannot read baseline/],
    ['approve with a non-Ed25519 key', ['approve', 'build-42', '--key', 'app.eif'], /--key/],
    ['record without a name', ['record', '--eif', 'app.eif'], /--name/],
    ['record with a bad name', ['record', '--eif', 'app.eif', '--name', '../x'], /name/],
    ['record from a file that is neither', ['record', '--nitro-cli-json', 'keys/alice.jwk.pub', '--name', 'x'], /Measurements/],
    ['check without baseline', ['record', '--check', 'app.eif'], /--baseline/],
    ['keygen over an existing key', ['keygen', '--out', 'keys/alice.jwk'], /refusing to overwrite/],
  ])('%s fails cleanly', async (_name, args, pattern) => {
    const r = await run(args);
    expect(r.status === 1 || r.status === 2).toBe(true);
    expect(r.stdout + r.stderr).toMatch(pattern);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});
