/**
 * Errors a person can act on (issue 16): usage mistakes name the flag and the expected form (exit 2,
 * never "internal error"), --json failures are JSON, store commands never pick a store in the cwd
 * silently, and the dev helpers (`dev pcrs`, `bind --dev-pcrs`, `get --dev`) say what they use.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { cli, keygate } from '../support/cli.js';
import { startKmsServer, TEST_CREDENTIALS, type KmsTestServer } from '../support/kms-server.js';
import { devPcrs } from '../../vsock-shim/simulator/nsm-simulator.js';

const H = 'ab'.repeat(48);
let dir: string;
let store: string[];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-usable-'));
  writeFileSync(join(dir, 'value'), 'v');
  store = ['--store', join(dir, 'store'), '--state', join(dir, 'state')];
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Exit 2, the whole stderr, no stack trace and no "internal error". */
async function usage(args: string[], stderr: string, cwd?: string): Promise<void> {
  const r = await cli(args, undefined, cwd);
  expect(r.stderr).toBe(stderr);
  expect(r.status).toBe(2);
}

const hint = (cmd: string): string => `(run "keygate ${cmd} --help" for usage)\n`;

describe('usage mistakes name the flag and the expected form', () => {
  it('invalid PCR hex', () =>
    usage(['bind', 's', '--pcr0', 'zz', '--pcr1', H, '--pcr2', H, '--value-stdin', ...store], `keygate bind: --pcr0: expected 96 hex characters (a SHA-384 measurement), got "zz"\n${hint('bind')}`));

  it('a missing --pcr1', () =>
    usage(['bind', 's', '--pcr0', H, '--pcr2', H, '--value-stdin', ...store], `keygate bind: --pcr1 is missing: give --pcr0, --pcr1 and --pcr2 (96 hex characters each)\n${hint('bind')}`));

  it('invalid hex in revoke --pcr0', () => usage(['revoke', '--pcr0', 'zz', ...store], `keygate revoke: --pcr0: expected 96 hex characters (a SHA-384 measurement), got "zz"\n${hint('revoke')}`));

  it('a missing value file', () =>
    usage(['bind', 's', '--pcr0', H, '--pcr1', H, '--pcr2', H, '--value-file', join(dir, 'nope'), ...store], `keygate bind: --value-file ${join(dir, 'nope')}: no such file (ENOENT)\n${hint('bind')}`));

  it('--store pointing at a file', () =>
    usage(['bind', 's', '--pcr0', H, '--pcr1', H, '--pcr2', H, '--value-file', join(dir, 'value'), '--store', join(dir, 'value'), '--state', join(dir, 'state')], `keygate bind: --store ${join(dir, 'value')}: not a directory\n${hint('bind')}`));

  it('unknown flags and flags without their value', async () => {
    await usage(['bind', 's', '--bogus', ...store], `keygate bind: unknown option --bogus\n${hint('bind')}`);
    await usage(['list', '--store'], `keygate list: --store needs a value\n${hint('list')}`);
    await usage(['list', '--dev=yes'], `keygate list: --dev takes no value\n${hint('list')}`);
  });

  it('a value that starts with "-" is given as --flag=VALUE, and the error says so', async () => {
    // Delegation ids issued before ids got their prefix may start with "-" (base64url): node's parser
    // takes `--delegation -x...` for a flag without its value.
    const id = '-AbCdEfGhIjKlMnOpQrStU';
    await usage(['revoke', '--delegation', id, ...store], `keygate revoke: --delegation needs a value (one that starts with "-" is written --delegation=VALUE)\n${hint('revoke')}`);
    await usage(['revoke', `--delegation=${id}`, ...store], `keygate revoke: no delegation ${id} in this store (keygate delegations list shows them)\n${hint('revoke')}`);
  });

  it('record --name ../evil', async () => {
    const json = join(dir, 'nitro.json');
    writeFileSync(json, JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: H, PCR1: H, PCR2: H } }));
    await usage(['record', '--nitro-cli-json', json, '--name', '../evil', '--baselines', join(dir, 'b')], `keygate record: --name: "../evil" is not a baseline name (letters, digits, ".", "_", "-"; starts with a letter or digit; up to 128)\n${hint('record')}`);
    expect(existsSync(join(dir, 'evil.json'))).toBe(false);
  });

  it('a public key, a non-key file or a missing file where a private key is needed', async () => {
    const json = join(dir, 'nitro.json');
    writeFileSync(json, JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: H, PCR1: H, PCR2: H } }));
    const key = join(dir, 'admin');
    expect((await cli(['keygen', '--out', key])).status).toBe(0);
    const record = (signKey: string): string[] => ['record', '--nitro-cli-json', json, '--name', 'b1', '--baselines', join(dir, 'b'), '--sign-key', signKey];
    await usage(record(`${key}.pub`), `keygate record: --sign-key: ${key}.pub is a public key; give the private key (keygate keygen writes it to FILE, the public one to FILE.pub)\n${hint('record')}`);
    await usage(record(join(dir, 'value')), `keygate record: --sign-key: ${join(dir, 'value')} is not a key: expected an Ed25519 private key (JWK or PKCS#8 PEM, as keygate keygen writes)\n${hint('record')}`);
    await usage(record(join(dir, 'nokey')), `keygate record: --sign-key: cannot read ${join(dir, 'nokey')}: no such file (ENOENT)\n${hint('record')}`);
    expect((await cli(['record', '--nitro-cli-json', json, '--name', 'b1', '--baselines', join(dir, 'b')])).status).toBe(0);
    await usage(['approve', 'b1', '--baselines', join(dir, 'b'), '--key', `${key}.pub`], `keygate approve: --key: ${key}.pub is a public key; give the private key (keygate keygen writes it to FILE, the public one to FILE.pub)\n${hint('approve')}`);
  });

  describe('a port in use', () => {
    let taken: Server;
    let port: number;
    beforeAll(async () => {
      taken = createServer();
      await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
      port = (taken.address() as { port: number }).port;
    });
    afterAll(() => new Promise<void>((r) => taken.close(() => r())));

    it('keygate broker (a real process) and keygate forward', async () => {
      const r = keygate(['broker', ...store, '--listen', `127.0.0.1:${port}`]);
      expect(r.stderr).toMatch(new RegExp(`^keygate broker: --listen 127\\.0\\.0\\.1:${port}: address already in use \\(another broker or process listens there; choose another port\\)\\n$`, 'm'));
      expect(r.stderr).not.toMatch(/internal error/);
      expect(r.status).toBe(2);
      await usage(['forward', '--listen', `tcp:127.0.0.1:${port}`, '--allow', '127.0.0.1:1'], `keygate forward: --listen tcp:127.0.0.1:${port}: address already in use (another broker or process listens there; choose another port)\n`);
    });
  });

  it('KMS failures name the AWS error and the key', async () => {
    const kms: KmsTestServer = await startKmsServer();
    const saved = { ...process.env };
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey, AWS_REGION: 'us-east-1' });
    try {
      const config = join(dir, 'kms.json');
      writeFileSync(config, JSON.stringify({ store: 'kms-store', stateDir: 'kms-state', kms: { endpoint: kms.endpoint, region: 'us-east-1', maxAttempts: 1 } }));
      kms.faults.accessDenied = 1;
      const r = await cli(['bind', 's', '--pcr0', H, '--pcr1', H, '--pcr2', H, '--value-file', join(dir, 'value'), '--provider', 'aws-kms', '--kms-key-id', kms.keyId, '--config', config]);
      expect(r.stderr).toBe(`keygate bind: SECRET_UNAVAILABLE: KMS Encrypt: AccessDeniedException (key ${kms.keyId}): User is not authorized to perform this operation\n`);
      expect(r.status).toBe(2);
    } finally {
      process.env = saved;
      await kms.close();
    }
  });
});

describe('--json answers in JSON on usage and read errors too', () => {
  it('verify: its own invalid shape with code USAGE', async () => {
    const r = await cli(['verify', join(dir, 'nope.cbor'), '--json']);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ valid: false, code: 'USAGE', message: `cannot read ${join(dir, 'nope.cbor')}: no such file (ENOENT)` });
    const flag = await cli(['verify', '--bogus', '--json']);
    expect(flag.status).toBe(2);
    expect(JSON.parse(flag.stdout)).toEqual({ valid: false, code: 'USAGE', message: 'unknown option --bogus' });
  });

  it('other commands: { error: { code, message } }', async () => {
    const r = await cli(['list', '--json', '--bogus']);
    expect(r.status).toBe(2);
    expect(JSON.parse(r.stdout)).toEqual({ error: { code: 'USAGE', message: 'unknown option --bogus' } });
  });
});

describe('store commands never choose ./keygate-store silently', () => {
  const refusal = 'no store chosen: give --config FILE (or set $KEYGATE_CONFIG), --store DIR with --state DIR, or --dev (development store in ./.keygate-dev)';
  let saved: string | undefined;
  beforeAll(() => {
    saved = process.env.KEYGATE_CONFIG;
    delete process.env.KEYGATE_CONFIG;
  });
  afterAll(() => {
    if (saved !== undefined) process.env.KEYGATE_CONFIG = saved;
  });

  it('refuses bind, list and broker without --store/--config/--dev/$KEYGATE_CONFIG, creating nothing', async () => {
    const cwd = mkdtempSync(join(dir, 'cwd-'));
    await usage(['bind', 's', '--pcr0', H, '--pcr1', H, '--pcr2', H, '--value-file', join(dir, 'value')], `keygate bind: ${refusal}\n${hint('bind')}`, cwd);
    await usage(['list'], `keygate list: ${refusal}\n${hint('list')}`, cwd);
    await usage(['broker'], `keygate broker: ${refusal}\n${hint('broker')}`, cwd);
    await usage(['list', '--store', 'x'], `keygate list: --store DIR needs --state DIR too (where the keys live): give --config FILE (or set $KEYGATE_CONFIG), --store DIR with --state DIR, or --dev (development store in ./.keygate-dev)\n${hint('list')}`, cwd);
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('prints the store path on every write', async () => {
    const cwd = mkdtempSync(join(dir, 'cwd-'));
    const where = resolve(cwd, '.keygate-dev', 'store');
    const bind = await cli(['bind', 's', '--pcr0', H, '--pcr1', H, '--pcr2', H, '--value-file', join(dir, 'value'), '--dev'], undefined, cwd);
    expect(bind.stdout).toBe(`bound s version 1 (1 allowed measurement set, ttl 60s, local)\nstore: ${where}\n`);
    expect((await cli(['rotate', 's', '--value-file', join(dir, 'value'), '--dev'], undefined, cwd)).stdout).toBe(`rotated s to version 2\nstore: ${where}\n`);
    expect((await cli(['revoke', 's', '--dev'], undefined, cwd)).stdout).toBe(`revoked secret s\nstore: ${where}\n`);
    expect((await cli(['unbind', 's', '--dev'], undefined, cwd)).stdout).toBe(`unbound s\nstore: ${where}\n`);
  });

  it('re-binding without --add says it replaced the rules', async () => {
    const r1 = await cli(['bind', 'r', '--pcr0', H, '--pcr1', H, '--pcr2', H, '--value-file', join(dir, 'value'), ...store]);
    expect(r1.stdout).not.toMatch(/replaced/);
    const r2 = await cli(['bind', 'r', '--pcr0', 'cd'.repeat(48), '--pcr1', H, '--pcr2', H, '--value-file', join(dir, 'value'), ...store]);
    expect(r2.stdout).toBe(`bound r version 2 (1 allowed measurement set, ttl 60s, local)\nreplaced the 1 measurement set r was bound to before (--add keeps them)\nstore: ${resolve(dir, 'store')}\n`);
    const r3 = await cli(['bind', 'r', '--pcr0', H, '--pcr1', H, '--pcr2', H, '--add', '--value-file', join(dir, 'value'), ...store]);
    expect(r3.stdout).not.toMatch(/replaced/);
  });
});

describe('development helpers', () => {
  it('keygate dev pcrs [--json] prints the simulator PCRs, and bind --dev --dev-pcrs binds them', async () => {
    const pcrs = devPcrs();
    const json = await cli(['dev', 'pcrs', '--json']);
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ pcrs });
    const text = await cli(['dev', 'pcrs']);
    expect(text.stdout).toBe(Object.entries(pcrs).map(([i, v]) => `PCR${i} ${v}\n`).join(''));
    const cwd = mkdtempSync(join(dir, 'cwd-'));
    const bind = await cli(['bind', 'd', '--dev', '--dev-pcrs', '--value-file', join(dir, 'value')], undefined, cwd);
    expect(bind.status).toBe(0);
    const list = JSON.parse((await cli(['list', '--json', '--dev'], undefined, cwd)).stdout) as { bindings: Array<{ allow: Array<{ pcrs: Record<string, string> }> }> };
    expect(list.bindings[0]!.allow).toEqual([{ pcrs: { 0: pcrs[0], 1: pcrs[1], 2: pcrs[2] } }]);
    await usage(['bind', 'd', '--dev-pcrs', '--value-file', join(dir, 'value'), ...store], `keygate bind: --dev-pcrs binds to the NSM simulator's measurements: it needs --dev\n${hint('bind')}`);
  });

  it('keygate get --dev rejects --transport/--via, honours --config, and says which address failed and why', async () => {
    const cwd = mkdtempSync(join(dir, 'cwd-'));
    await usage(['get', 's', '--dev', '--transport', 'tcp:127.0.0.1:1'], `keygate get: --transport and --via are not used with --dev: it connects to the broker directly (--broker URL or --config FILE)\n${hint('get')}`, cwd);
    await usage(['get', 's', '--dev', '--via', '127.0.0.1:1'], `keygate get: --transport and --via are not used with --dev: it connects to the broker directly (--broker URL or --config FILE)\n${hint('get')}`, cwd);
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const config = join(cwd, 'broker.json');
    writeFileSync(config, JSON.stringify({ listen: `127.0.0.1:${port}` }));
    const r = await cli(['get', 's', '--dev', '--config', config], undefined, cwd);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^keygate get: cannot reach the broker at http://127\\.0\\.0\\.1:${port}: connect ECONNREFUSED 127\\.0\\.0\\.1:${port}\\n$`, 'm'));
  });

  it('-v, version and --version print the version; --help lists them; broker --help lists --state', async () => {
    for (const v of ['-v', 'version', '--version']) expect(await cli([v])).toEqual({ status: 0, stdout: 'keygate 0.1.0\n', stderr: '' });
    expect((await cli(['--help'])).stdout).toMatch(/^ {2}version {11}print the version \(also -v, --version\)$/m);
    expect((await cli(['broker', '--help'])).stdout.split('\n')[0]).toBe('Usage: keygate broker [--config FILE] [--listen HOST:PORT] [--workers N] [--verify-threads N] [--store DIR --state DIR] [--dev] [--check-config]');
  });
});

