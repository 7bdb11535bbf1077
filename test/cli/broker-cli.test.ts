/**
 * The admin commands in process (main() with captured output) on a real store;
 * `keygate broker`, `forward`, the environment and `npm start` as real subprocesses.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { BIN, cli, keygate, keygateServer } from '../support/cli.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../support/enclave.js';

let dir: string;
let store: string[];
let pki: TestPki;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-admin-'));
  pki = await createTestPki(Date.now());
  writeFileSync(join(dir, 'test-root.pem'), pki.root.pem);
  writeFileSync(
    join(dir, 'keygate.json'),
    JSON.stringify({ store: 'store', stateDir: 'state', extraRootPems: [pki.root.pem], listen: '127.0.0.1:0' }),
  );
  store = ['--config', join(dir, 'keygate.json')];
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const pcrArgs = ['--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2]];

describe('keygate bind / rotate / list / revoke / unbind', () => {
  it('refuses a value over 64 KiB without reading an endless file to its end', async () => {
    const bind = await cli(['bind', 'huge', ...pcrArgs, '--value-file', '/dev/zero', ...store]);
    expect(bind.status).toBe(2);
    expect(bind.stderr).toMatch(/the secret value is larger than 64 KiB/);
  });

  it('binds from stdin and lists without ever printing the value', async () => {
    const bind = await cli(['bind', 'db-password', ...pcrArgs, '--value-stdin', '--ttl', '2m', ...store], 'correct horse');
    expect(bind.stderr).toBe('');
    expect(bind.status).toBe(0);
    expect(bind.stdout).toMatch(/bound db-password version 1/);
    const list = await cli(['list', '--json', ...store]);
    expect(list.status).toBe(0);
    const parsed = JSON.parse(list.stdout) as { bindings: Array<Record<string, unknown>> };
    expect(parsed.bindings[0]).toMatchObject({ secret: 'db-password', version: 1, ttlSeconds: 120, provider: 'local' });
    expect(parsed.bindings[0]).not.toHaveProperty('ciphertext');
    expect(list.stdout).not.toContain('correct horse');
    expect((await cli(['list', ...store])).stdout).toMatch(/db-password {2}v1 {2}ttl 120s/);
    const stored = readFileSync(join(dir, 'store', 'bindings', 'db-password.json'), 'utf8');
    expect(stored).not.toContain('correct horse');
  });

  it('adds a second measurement set for a rolling deploy, and takes PCRs from a baseline file', async () => {
    const baseline = join(dir, 'build-42.json');
    writeFileSync(baseline, JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: 'aa'.repeat(48), PCR1: APPROVED[1], PCR2: APPROVED[2] } }));
    const valueFile = join(dir, 'value.txt');
    writeFileSync(valueFile, 'correct horse');
    const r = await cli(['bind', 'db-password', '--baseline', baseline, '--add', '--value-file', valueFile, ...store]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/version 2 \(2 allowed measurement sets/);
    expect((await cli(['list', ...store])).stdout).toContain(`PCR0=${'aa'.repeat(8)}`);
  });

  it('rotates, revokes a secret and an identity, and unbinds', async () => {
    const valueFile = join(dir, 'v2.txt');
    writeFileSync(valueFile, 'battery staple');
    expect((await cli(['rotate', 'db-password', '--value-file', valueFile, ...store])).stdout).toMatch(/version 3/);
    expect((await cli(['revoke', 'db-password', ...store])).status).toBe(0);
    expect((await cli(['list', ...store])).stdout).toContain('REVOKED');
    expect((await cli(['revoke', '--pcr0', 'bb'.repeat(48), '--instance', 'i-0fedcba9876543210', ...store])).stdout).toMatch(/1 PCR0 value\(s\), 1 instance/);
    expect((await cli(['unbind', 'db-password', ...store])).status).toBe(0);
    const again = await cli(['unbind', 'db-password', ...store]);
    expect(again.status).toBe(2);
    expect(again.stderr).toMatch(/no binding for "db-password"/);
  });

  it.each([
    ['value on the command line is impossible', ['bind', 'x', ...pcrArgs, ...['--value', 'secret']], /unknown option --value/],
    ['no value source', ['bind', 'x', ...pcrArgs], /--value-file F or --value-stdin/],
    ['missing PCR2', ['bind', 'x', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--value-stdin'], /--pcr2 is missing/],
    ['bad PCR hex', ['bind', 'x', '--pcr0', 'xyz', '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--value-stdin'], /--pcr0: expected 96 hex characters/],
    ['bad secret name', ['bind', '../etc', ...pcrArgs, '--value-stdin'], /not a valid secret name/],
    ['aws-kms without key id', ['bind', 'x', ...pcrArgs, '--value-stdin', '--provider', 'aws-kms'], /--kms-key-id/],
    ['unknown provider', ['bind', 'x', ...pcrArgs, '--value-stdin', '--provider', 'vault'], /--provider/],
    ['rotate unknown', ['rotate', 'nope', '--value-stdin'], /no binding/],
    ['revoke with nothing', ['revoke'], /one secret name/],
    ['bad revoke pcr0', ['revoke', '--pcr0', 'zz'], /pcr0/],
  ])('%s -> exit 2', async (_name, args, pattern) => {
    const r = await cli([...args, ...store], 'some value');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(pattern);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr + r.stdout).not.toContain('some value');
  });
});

describe('keygate broker + audit verify', () => {
  it('serves releases until SIGTERM, and its audit log verifies and detects an edit', async () => {
    expect((await cli(['bind', 'api-key', ...pcrArgs, '--value-stdin', ...store], 'ak-live-1')).status).toBe(0);
    const server = await keygateServer(['broker', ...store, '--workers', '1'], /listening on (http:\/\/\S+)/);
    const url = server.match[1]!;
    try {
      const enclave = new TestEnclave(pki, url);
      const res = await enclave.request(['api-key']);
      expect(res.status).toBe(200);
      const jwk = (await (await fetch(`${url}/v1/broker-key`)).json()) as JWK;
      expect(valueOf(await enclave.open(res.body.secrets![0]!, jwk))).toBe('ak-live-1');
      expect((await enclave.request(['missing'])).status).toBe(403);
    } finally {
      expect(await server.stop()).toBe(0);
    }
    expect(server.output()).toMatch(/NON-AWS ROOTS ARE TRUSTED/);

    const audit = join(dir, 'state', 'audit.jsonl');
    const ok = await cli(['audit', 'verify', audit, ...store]);
    expect(ok.stdout).toMatch(/audit log intact: 2 decisions, \d+ seals \(signatures verified\)/);
    expect(ok.status).toBe(0);
    const json = JSON.parse((await cli(['audit', 'verify', audit, '--json', ...store])).stdout) as { ok: boolean; decisions: number };
    expect(json).toMatchObject({ ok: true, decisions: 2 });

    const lines = readFileSync(audit, 'utf8').trim().split('\n');
    lines[0] = lines[0]!.replace('"RELEASED"', '"DENIED__"');
    writeFileSync(audit, `${lines.join('\n')}\n`);
    const bad = await cli(['audit', 'verify', audit, ...store]);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/TAMPERED at line 2/);
  });

  it('refuses plain HTTP on a non-loopback address', async () => {
    const r = await cli(['broker', ...store, '--listen', '0.0.0.0:8443']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/only allowed on loopback/);
  });

  it('refuses a config file that sets "dev": development trust comes only from the --dev flag', async () => {
    for (const value of [true, false]) {
      const file = join(dir, `dev-${value}.json`);
      writeFileSync(file, JSON.stringify({ store: 'store', stateDir: 'state', listen: '127.0.0.1:0', dev: value }));
      for (const command of [['broker'], ['list']]) {
        const r = await cli([...command, '--config', file]);
        expect(r.status).toBe(2);
        expect(r.stderr).toMatch(/"dev".*--dev/);
        expect(r.stdout).toBe('');
      }
    }
  });
});

describe('--dev and a config file', () => {
  it('refuses --dev under $KEYGATE_CONFIG alone: the simulator root is never trusted over a store the command line did not name', () => {
    const file = join(dir, 'prod.json');
    const prod = join(dir, 'prod');
    writeFileSync(file, JSON.stringify({ store: join(prod, 'store'), stateDir: join(prod, 'state'), listen: '127.0.0.1:0' }));
    const runs = [
      spawnSync(process.execPath, [BIN, 'broker', '--dev'], { encoding: 'utf8', timeout: 30_000, cwd: dir, env: { ...process.env, KEYGATE_CONFIG: file } }),
      spawnSync(process.execPath, [BIN, 'list', '--dev'], { encoding: 'utf8', timeout: 30_000, cwd: dir, env: { ...process.env, KEYGATE_CONFIG: file } }),
    ];
    for (const r of runs) {
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(/--dev does not combine with \$KEYGATE_CONFIG/);
    }
    // Nothing was written into the configured state directory (no simulator PKI, no keys).
    expect(existsSync(prod)).toBe(false);
    // Named on the command line, the config's store is used together with --dev (replicas against a local DynamoDB).
    const explicit = spawnSync(process.execPath, [BIN, 'list', '--dev', '--config', file, '--json'], { encoding: 'utf8', timeout: 30_000, cwd: dir });
    expect(explicit.status).toBe(0);
    expect(existsSync(join(prod, 'store'))).toBe(true);
    expect(existsSync(join(dir, '.keygate-dev'))).toBe(false);
  });
});

describe('keygate demo (npm start)', () => {
  it('runs the whole flow on development defaults and exits 0', () => {
    const r = keygate(['demo']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/DEVELOPMENT MODE/);
    expect(r.stderr).toMatch(/NSM SIMULATOR/);
    expect(r.stdout).toMatch(/getSecret\("db-password"\) -> released/);
    expect(r.stdout).toMatch(/cache hit .* no attestation \(hits 1, attestations 1\)/);
    expect(r.stdout).toMatch(/audit log: 1 decision\(s\), chain and seal signatures verify/);
    expect(r.stdout).not.toContain('correct horse');
  });

  it('--mismatch shows the PCR mismatch denied', async () => {
    const r = await cli(['demo', '--mismatch']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/denied: POLICY_DENIED/);
    expect(r.stdout).not.toMatch(/-> released/);
  });
});

describe('keygate forward', () => {
  it('relays allow-listed destinations and refuses the rest until SIGTERM', async () => {
    const { createServer, connect } = await import('node:net');
    const echo = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const echoPort = (echo.address() as { port: number }).port;
    const fwd = await keygateServer(['forward', '--listen', 'tcp:127.0.0.1:0', '--allow', `127.0.0.1:${echoPort}`], /listening on tcp:127\.0\.0\.1:(\d+)/);
    const port = Number(fwd.match[1]);
    const ask = (target: string): Promise<string> =>
      new Promise((resolve) => {
        const s = connect(port, '127.0.0.1');
        let out = '';
        s.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\r\n\r\n')) {
            s.destroy();
            resolve(out);
          }
        });
        s.write(`CONNECT ${target} HTTP/1.1\r\n\r\n`);
      });
    try {
      expect(await ask(`127.0.0.1:${echoPort}`)).toMatch(/^HTTP\/1\.1 200/);
      expect(await ask('169.254.169.254:80')).toMatch(/^HTTP\/1\.1 403/);
    } finally {
      expect(await fwd.stop()).toBe(0);
      echo.close();
    }
    expect(fwd.output()).toMatch(/"decision":"deny".*"target":"169\.254\.169\.254:80"/);
  });

  it('says which relay it uses: --relay js keeps tunnels on Node streams', async () => {
    const fwd = await keygateServer(['forward', '--listen', 'tcp:127.0.0.1:0', '--allow', '127.0.0.1:9', '--relay', 'js'], /listening on tcp:127\.0\.0\.1:\d+.*; relay: (\w+)\n/);
    expect(fwd.match[1]).toBe('streams');
    expect(await fwd.stop()).toBe(0);
  });
});

describe('keygate broker --dev with keygate get --dev (separate processes, shared dev PKI)', () => {
  it('releases to the simulated enclave and only to it', async () => {
    const { mkdtempSync: mk } = await import('node:fs');
    const cwd = mk(join(tmpdir(), 'keygate-devflow-'));
    const { devPcrs } = await import('../../vsock-shim/simulator/nsm-simulator.js');
    const p = devPcrs();
    const server = await keygateServer(['broker', '--dev', '--listen', '127.0.0.1:0'], /listening on (http:\/\/\S+)/, cwd);
    try {
      const url = server.match[1]!;
      expect((await cli(['bind', 'app-token', '--pcr0', p[0]!, '--pcr1', p[1]!, '--pcr2', p[2]!, '--value-stdin', '--dev'], 's3cret-token', cwd)).status).toBe(0);
      const got = await cli(['get', 'app-token', '--dev', '--broker', url], undefined, cwd);
      expect(got.stderr).toMatch(/NSM SIMULATOR/);
      expect(got.stdout).toBe('s3cret-token');
      expect(got.status).toBe(0);
      const denied = await cli(['get', 'other', '--dev', '--broker', url], undefined, cwd);
      expect(denied.status).toBe(1);
      expect(denied.stderr).toMatch(/POLICY_DENIED/);
    } finally {
      expect(await server.stop()).toBe(0);
      rmSync(cwd, { recursive: true, force: true });
    }
    expect(server.output()).toMatch(/DEVELOPMENT MODE/);
    expect(server.output()).toMatch(/NON-AWS ROOTS ARE TRUSTED/);
  });

  it('get --dev reaches a broker started with --dev over a named config and its own state directory (replicas)', async () => {
    const { mkdtempSync: mk } = await import('node:fs');
    const cwd = mk(join(tmpdir(), 'keygate-devcfg-'));
    const { devPcrs } = await import('../../vsock-shim/simulator/nsm-simulator.js');
    const p = devPcrs();
    writeFileSync(join(cwd, 'replicas.json'), JSON.stringify({ store: 'shared-store', stateDir: 'state-default' }));
    const server = await keygateServer(['broker', '--dev', '--config', 'replicas.json', '--state', 'replica-a', '--listen', '127.0.0.1:0'], /listening on (http:\/\/\S+)/, cwd);
    try {
      const url = server.match[1]!;
      expect((await cli(['bind', 'app-token', '--pcr0', p[0]!, '--pcr1', p[1]!, '--pcr2', p[2]!, '--value-stdin', '--dev', '--config', 'replicas.json', '--state', 'replica-a'], 'replica-token', cwd)).status).toBe(0);
      const got = await cli(['get', 'app-token', '--dev', '--broker', url], undefined, cwd);
      expect(got.stdout).toBe('replica-token');
      expect(got.status).toBe(0);
    } finally {
      expect(await server.stop()).toBe(0);
      rmSync(cwd, { recursive: true, force: true });
    }
  });

  it('outside an enclave, without --dev, says there is no NSM', async () => {
    const keyFile = join(dir, 'broker.jwk');
    writeFileSync(keyFile, JSON.stringify({ kty: 'OKP', crv: 'Ed25519', x: 'A'.repeat(43) }));
    const r = await cli(['get', 'x', '--broker-key', keyFile, '--broker', 'http://127.0.0.1:1']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/\/dev\/nsm/);
    expect((await cli(['get', 'x'])).stderr).toMatch(/--broker-key FILE is required/);
  });
});
