/**
 * The README's baseline walk under --dev, end to end with a real `keygate broker --dev` process and
 * the in-process CLI: record (a signed EIF: PCR8) -> baseline put -> approve (the development admin
 * key) -> bind --baseline -> a simulated enclave running that image gets the secret; then a second
 * build added without touching the value, PCR3 (IAM role) rules, and every unrevoke form.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli, keygateServer } from '../support/cli.js';
import { buildEif, expectedPcrs, type EifParts } from '../support/eif.js';
import { createTestPki } from '../support/pki.js';
import { parseBaseline } from '../../broker/policy/baseline.js';

let cwd: string;
let server: Awaited<ReturnType<typeof keygateServer>>;
let url: string;
const build = (signingCertPem: string): EifParts => ({ kernel: randomBytes(4096), cmdline: Buffer.from('console=ttyS0'), ramdisks: [randomBytes(2048), randomBytes(4096)], signingCertPem, flags: 1 });
let build1: EifParts;
let build2: EifParts;
/** The in-process CLI, in the walk's working directory. */
const run = (args: string[], input?: string): ReturnType<typeof cli> => cli(args, input, cwd);
/** A simulated enclave running `image` asks the --dev broker for `name`. */
const get = (name: string, image: string): ReturnType<typeof cli> => run(['get', name, '--dev', '--broker', url, '--image', image]);

beforeAll(async () => {
  cwd = mkdtempSync(join(tmpdir(), 'keygate-walk-'));
  const signer = (await createTestPki(Date.now())).intermediates[0]!.pem;
  build1 = build(signer);
  build2 = build(signer);
  writeFileSync(join(cwd, 'app-42.eif'), buildEif(build1));
  writeFileSync(join(cwd, 'app-43.eif'), buildEif(build2));
  // Another signing certificate: same image bytes, another PCR8.
  writeFileSync(join(cwd, 'app-42-other-signer.eif'), buildEif({ ...build1, signingCertPem: (await createTestPki(Date.now())).intermediates[0]!.pem }));
  writeFileSync(join(cwd, 'pw.txt'), 'pw-42');
  server = await keygateServer(['broker', '--dev', '--listen', '127.0.0.1:0'], /listening on (http:\/\/\S+)/, cwd);
  url = server.match[1]!;
}, 60_000);
afterAll(async () => {
  await server?.stop();
  rmSync(cwd, { recursive: true, force: true });
});

describe('the README baseline walk under --dev', () => {
  it('record -> baseline put -> approve -> bind --baseline -> the simulated enclave gets the secret (PCR8 from a signed EIF)', async () => {
    // The broker said at start what it requires: under --dev, the development admin key.
    expect(server.output()).toMatch(/baseline approvals.*"adminKeys":1.*"approvalsRequired":1/);

    const recorded = await run(['record', '--eif', 'app-42.eif', '--name', 'build-42', '--builder', 'ci']);
    expect(recorded.status).toBe(0);
    const baseline = parseBaseline(JSON.parse(readFileSync(join(cwd, 'pcr-baselines', 'build-42.json'), 'utf8')));
    expect(baseline.pcrs['8']).toBe(expectedPcrs(build1)['8']);

    const put = await run(['baseline', 'put', 'pcr-baselines/build-42.json', '--dev']);
    expect(put.status).toBe(0);
    expect(put.stdout).toMatch(/stored baseline build-42 in \S*\.keygate-dev\/store \(0 approval\(s\); 0 valid approval\(s\) of 1 required\)/);
    expect(put.stderr).toMatch(/warning: baseline "build-42" has 0 valid approval\(s\) of 1 required.*BASELINE_NOT_APPROVED/);

    // Bound before approval: the binding is written, with a warning, and the enclave is denied.
    const early = await run(['bind', 'db-password', '--baseline', 'build-42', '--value-file', 'pw.txt', '--dev']);
    expect(early.status).toBe(0);
    expect(early.stderr).toMatch(/warning: .*BASELINE_NOT_APPROVED/);
    const denied = await get('db-password', 'app-42.eif');
    expect([denied.status, denied.stderr]).toEqual([1, expect.stringMatching(/POLICY_DENIED/)]);

    // Approving (the development key) lands in the store: no re-bind needed.
    const approved = await run(['approve', 'build-42', '--dev']);
    expect(approved.status).toBe(0);
    expect(approved.stdout).toMatch(/approved build-42 with key \S+ in \S*\.keygate-dev\/store: 1 approval\(s\) \(1 valid approval\(s\) of 1 required\)/);
    expect(approved.stderr).toBe('');
    const got = await get('db-password', 'app-42.eif');
    expect([got.status, got.stdout]).toEqual([0, 'pw-42']);

    // PCR8 is part of the build: the same image signed by another certificate is not build-42.
    expect((await get('db-password', 'app-42-other-signer.eif')).stderr).toMatch(/POLICY_DENIED/);

    // Re-binding with the value copies nothing over the store's approvals (the file has none).
    expect((await run(['bind', 'db-password', '--baseline', 'build-42', '--value-file', 'pw.txt', '--dev'])).stderr).toBe('');
    expect((await get('db-password', 'app-42.eif')).stdout).toBe('pw-42');
  }, 120_000);

  it('a second build is added without the value: same version, both builds read it', async () => {
    const list = async (): Promise<{ version: number; allow: unknown[]; updatedAt: string }> =>
      (JSON.parse((await run(['list', '--json', '--dev'])).stdout) as { bindings: Array<{ version: number; allow: unknown[]; updatedAt: string }> }).bindings[0]!;
    const before = await list();
    expect((await run(['record', '--eif', 'app-43.eif', '--name', 'build-43'])).status).toBe(0);
    expect((await run(['approve', 'build-43', '--dev'])).status).toBe(0); // a file not yet stored: stored with the approval
    const added = await run(['bind', 'db-password', '--baseline', 'build-43', '--dev']);
    expect(added.status).toBe(0);
    expect(added.stdout).toMatch(/added a measurement set \(baseline build-43\) to db-password in \S*\.keygate-dev\/store: version \d+ unchanged/);
    const after = await list();
    expect([after.version, after.allow.length]).toEqual([before.version, before.allow.length + 1]);
    expect((await get('db-password', 'app-43.eif')).stdout).toBe('pw-42');
    expect((await get('db-password', 'app-42.eif')).stdout).toBe('pw-42');
    // Again: nothing changes.
    expect((await run(['bind', 'db-password', '--baseline', 'build-43', '--dev'])).stdout).toMatch(/already allows/);
    expect((await list()).version).toBe(before.version);
  }, 120_000);

  it('a rule naming a baseline can also pin the IAM role (PCR3)', async () => {
    const devRole = 'arn:aws:iam::000000000000:role/keygate-dev'; // the NSM simulator's parent role
    writeFileSync(join(cwd, 'role.txt'), 'role-bound');
    expect((await run(['bind', 'role-secret', '--baseline', 'build-42', '--iam-role', 'arn:aws:iam::111111111111:role/other', '--value-file', 'role.txt', '--dev'])).status).toBe(0);
    expect((await get('role-secret', 'app-42.eif')).stderr).toMatch(/POLICY_DENIED/);
    expect((await run(['bind', 'role-secret', '--baseline', 'build-42', '--iam-role', devRole, '--dev'])).status).toBe(0);
    expect((await get('role-secret', 'app-42.eif')).stdout).toBe('role-bound');
    const rules = (JSON.parse((await run(['list', '--json', '--dev'])).stdout) as { bindings: Array<{ secret: string; allow: Array<{ pcrs: Record<string, string>; baseline?: string }> }> }).bindings.find((b) => b.secret === 'role-secret')!.allow;
    expect(rules.map((r) => [r.baseline, Object.keys(r.pcrs)])).toEqual([
      ['build-42', ['0', '1', '2', '3', '8']],
      ['build-42', ['0', '1', '2', '3', '8']],
    ]);
    expect((await run(['bind', 'role-secret', '--baseline', 'build-42', '--iam-role', 'not-an-arn', '--dev'])).stderr).toMatch(/--iam-role/);
  }, 120_000);

  it('every revoke form is undone by unrevoke, in one command each', async () => {
    const ok = async (): Promise<void> => expect((await get('db-password', 'app-42.eif')).stdout).toBe('pw-42');
    const refused = async (code: string): Promise<void> => expect((await get('db-password', 'app-42.eif')).stderr).toMatch(new RegExp(code));
    const pcr0 = expectedPcrs(build1)['0'];
    const instance = 'i-0de0000000000000a'; // the simulator's instance

    const forms: Array<[string[], string]> = [
      [['db-password'], 'POLICY_DENIED'],
      [['--pcr0', pcr0.toUpperCase()], 'REVOKED'],
      [['--instance', instance], 'REVOKED'],
      [['--baseline', 'build-42'], 'REVOKED'],
    ];
    for (const [args, code] of forms) {
      expect((await run(['revoke', ...args, '--dev'])).status).toBe(0);
      await refused(code);
      const undone = await run(['unrevoke', ...args, '--dev']);
      expect([undone.status, undone.stderr]).toEqual([0, '']);
      expect(undone.stdout).toMatch(/unrevoked .*\.keygate-dev\/store/);
      await ok();
      // Undoing again: it is not revoked; nothing changes.
      const again = await run(['unrevoke', ...args, '--dev']);
      expect([again.status, again.stderr]).toEqual([2, expect.stringMatching(/NOT_REVOKED/)]);
    }
  }, 180_000);

  it('refusals carry stable codes, and listing shows approvals', async () => {
    const codes: Array<[string[], RegExp]> = [
      [['approve', 'no-such-build', '--dev'], /BASELINE_NOT_FOUND/],
      [['bind', 'never-bound', '--baseline', 'build-42', '--dev'], /NOT_BOUND/],
      [['bind', 'db-password', '--baseline', 'no-such-build', '--dev'], /BASELINE_NOT_FOUND/],
      [['unrevoke', 'never-bound', '--dev'], /NOT_BOUND/],
      [['unrevoke', '--baseline', 'build-42', '--pcr0', 'ab'.repeat(48), '--dev'], /NOT_REVOKED: .*PCR0 (ab)+, baseline build-42/],
      [['bind', 'db-password', '--baseline', 'build-43', '--ttl', '5m', '--dev'], /give the value too/],
      [['bind', 'db-password', '--baseline', 'build-43', '--pcr0', 'ab'.repeat(48), '--dev'], /--baseline NAME/],
      [['baseline', 'put', 'missing.json', '--dev'], /INPUT_UNREADABLE/],
      [['baseline', 'frobnicate', '--dev'], /baseline put FILE/],
    ];
    for (const [args, pattern] of codes) {
      const r = await run(args);
      expect([args, r.status, r.stderr]).toEqual([args, 2, expect.stringMatching(pattern)]);
      expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    }
    // Another build recorded under a stored name is refused, and nothing is written.
    expect((await run(['record', '--eif', 'app-43.eif', '--name', 'build-42', '--force'])).status).toBe(0);
    const conflict = await run(['baseline', 'put', 'pcr-baselines/build-42.json', '--dev']);
    expect([conflict.status, conflict.stderr]).toEqual([2, expect.stringMatching(/BASELINE_CONFLICT/)]);
    expect((await get('db-password', 'app-42.eif')).stdout).toBe('pw-42');

    const listed = JSON.parse((await run(['baseline', 'list', '--json', '--dev'])).stdout) as { store: string; adminKeys: number; baselines: Array<{ name: string; valid: number; approved: boolean; revoked: boolean }> };
    expect(listed.store).toMatch(/\.keygate-dev\/store$/);
    expect(listed.adminKeys).toBe(1);
    expect(listed.baselines.map((b) => [b.name, b.valid, b.approved, b.revoked])).toEqual([
      ['build-42', 1, true, false],
      ['build-43', 1, true, false],
    ]);
    expect((await run(['baseline', 'list', '--dev'])).stdout).toMatch(/build-42 {2}approved {2}1\/1 valid approval/);
    for (const cmd of [['baseline'], ['unrevoke'], ['approve'], ['bind']]) expect((await run([...cmd, '--help'])).status).toBe(0);
  }, 120_000);
});

describe('approve --file-only (approval by review)', () => {
  it('signs the file and touches no store', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-fileonly-'));
    try {
      writeFileSync(join(dir, 'app.eif'), buildEif(build1));
      expect((await cli(['keygen', '--out', 'alice.jwk'], undefined, dir)).status).toBe(0);
      expect((await cli(['record', '--eif', 'app.eif', '--name', 'b1'], undefined, dir)).status).toBe(0);
      const r = await cli(['approve', 'b1', '--key', 'alice.jwk', '--file-only'], undefined, dir);
      expect([r.status, r.stdout]).toEqual([0, expect.stringMatching(/approved b1 with key \S+ in pcr-baselines\/b1\.json: 1 approval/)]);
      expect(existsSync(join(dir, 'keygate-store'))).toBe(false);
      expect((await cli(['approve', 'b1', '--key', 'alice.jwk', '--file-only', '--dev'], undefined, dir)).stderr).toMatch(/no store options/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('outside --dev: nothing configured says so', () => {
  it('bind --baseline warns that no adminKeys are configured', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-noadmin-'));
    try {
      writeFileSync(join(dir, 'app.eif'), buildEif(build1));
      writeFileSync(join(dir, 'pw.txt'), 'pw');
      const store = ['--store', join(dir, 'store'), '--state', join(dir, 'state')];
      expect((await cli(['record', '--eif', 'app.eif', '--name', 'b1'], undefined, dir)).status).toBe(0);
      const r = await cli(['bind', 'x', '--baseline', 'b1', '--value-file', 'pw.txt', ...store], undefined, dir);
      expect(r.status).toBe(0);
      expect(r.stderr).toMatch(/no adminKeys are configured.*BASELINE_NOT_APPROVED/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
