/**
 * Installing keygate on a machine without a C toolchain (issue 16): `npm pack`, then `npm install` of the
 * tarball into a temporary project with CC=/bin/false, CXX=/bin/false and a PATH holding only node, npm
 * and a shell (no make, no gcc, no python). The install succeeds, says the addon was not built and how to
 * build it; the CLI, the verifier and the broker run; the enclave-only calls throw NATIVE_ADDON_MISSING.
 * Dependencies come from npm's cache where it has them (--prefer-offline: `npm ci` filled it), else the registry.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixturePath, realDocuments } from '../support/fixtures.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

let work: string;
let app: string;
let env: Record<string, string>;
let install: Run;

/** A directory of symlinks to the only programs the install may use. */
function toolbox(dir: string): string {
  mkdirSync(dir);
  for (const tool of ['node', 'npm', 'sh']) {
    const found = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    expect(found, tool).not.toBe('');
    symlinkSync(found, join(dir, tool));
  }
  return dir;
}

/** Runs a command in the app directory with the compiler-less environment (bounded). */
function run(command: string, args: readonly string[], timeoutMs = 300_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: app, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      resolve({ code: null, stdout, stderr: `${stderr}${err.message}` });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const keygate = (...args: string[]): Promise<Run> => run(join(app, 'node_modules/.bin/keygate'), args);

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'keygate-nocc-'));
  app = join(work, 'app');
  mkdirSync(app);
  // --ignore-scripts: dist/ is built already (pretest); packing must not rebuild it under a running suite.
  const pack = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  expect(pack.status, pack.stderr).toBe(0);
  const packed = (JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>)[0]!;
  expect(packed.files.map((f) => f.path)).toEqual(expect.arrayContaining(['vsock-shim/native/install.mjs', 'vsock-shim/native/binding.gyp', 'vsock-shim/native/keygate_vsock.c']));
  // No build output of this checkout may travel in the tarball.
  expect(packed.files.filter((f) => f.path.includes('native/build'))).toEqual([]);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'no-compiler-app', private: true, type: 'module' }));
  // Nothing of this vitest/npm run leaks in (npm_config_*, VITEST, NODE_OPTIONS); HOME keeps npm's cache and config.
  const kept = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(npm_|VITEST|NODE_OPTIONS$|TEST$|INIT_CWD$)/i.test(k))) as Record<string, string>;
  env = { ...kept, PATH: toolbox(join(work, 'bin')), CC: '/bin/false', CXX: '/bin/false' };
  install = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts', join(work, packed.filename)], 600_000);
}, 900_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('installing the packed package without a C compiler, make or python', () => {
  it('the toolbox really has no compiler: make and gcc are not on PATH', async () => {
    const r = await run('sh', ['-c', 'command -v make || command -v gcc || command -v cc || command -v python3 || echo none']);
    expect(r.stdout.trim()).toBe('none');
  });

  it('succeeds, does not build the addon, and says why and how to build it', () => {
    expect(install.code, install.stderr).toBe(0);
    expect(install.stderr).toContain('keygate: the vsock/NSM native addon was not built (not found or not working: a C compiler (/bin/false), a C++ compiler driver (/bin/false), make, python3');
    expect(install.stderr).toContain('npm run build:native');
    expect(existsSync(join(app, 'node_modules/keygate/vsock-shim/native/build'))).toBe(false);
  });

  it('cbor-x\'s optional native decoder comes prebuilt: keygate pins cbor-extract 2.2.2 (2.2.3 names platform packages that were never published, so it compiles)', async () => {
    expect(install.stderr + install.stdout).not.toContain('No native build was found');
    expect(JSON.parse(readFileSync(join(app, 'node_modules/cbor-extract/package.json'), 'utf8')).version).toBe('2.2.2');
    const r = await run(process.execPath, ['-e', "console.log(typeof require('cbor-extract').extractStrings)"]);
    expect(r.stdout.trim(), r.stderr).toBe('function');
  });

  it('keygate --help and version run', async () => {
    const help = await keygate('--help');
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toContain('Usage: keygate <command>');
    expect((await keygate('--version')).stdout).toBe('keygate 0.1.0\n');
  });

  it('keygate verify checks a real attestation document', async () => {
    const doc = realDocuments.find((d) => d.file === 'real-01.cbor')!;
    const r = await keygate('verify', fixturePath(doc.file), '--at', String(doc.timestamp_ms), '--allow-debug', '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ valid: true, document: { moduleId: doc.module_id } });
  });

  it('keygate broker --check-config accepts examples/broker.json, and a broker starts and answers /healthz', async () => {
    const checked = await keygate('broker', '--config', join(ROOT, 'examples/broker.json'), '--check-config');
    expect(checked.code, checked.stderr).toBe(0);
    expect(JSON.parse(checked.stdout)).toMatchObject({ config: { listen: '127.0.0.1:8443' } });

    const child = spawn(join(app, 'node_modules/.bin/keygate'), ['broker', '--dev', '--listen', '127.0.0.1:0'], { cwd: app, env });
    try {
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      const deadline = Date.now() + 120_000;
      let url: string | undefined;
      while (!url && Date.now() < deadline && child.exitCode === null) {
        url = /listening on (http:\/\/\S+)/.exec(out)?.[1];
        if (!url) await new Promise((r) => setTimeout(r, 100));
      }
      expect(url, out).toBeDefined();
      const res = await fetch(`${url!.replace(/\/$/, '')}/healthz`);
      expect(res.status).toBe(200);
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('the enclave-only calls throw NATIVE_ADDON_MISSING saying how to build the addon; the agent reports it as the cause', async () => {
    const script = `
      import { connectVsock, listenVsock, openNsmDevice, createAgent, parseTransport, tunnelTransport, NativeAddonMissingError } from 'keygate/agent';
      import { NsmSimulator } from 'keygate/testing';
      import { generateKeyPairSync } from 'node:crypto';
      const out = {};
      const code = (f) => { try { f(); return 'no error'; } catch (e) { return [e.name, e.code, e instanceof NativeAddonMissingError, /npm run build:native/.test(e.message)]; } };
      out.connect = code(() => connectVsock(3, 8000));
      out.nsm = code(() => openNsmDevice());
      try { await listenVsock(5005, () => {}); out.listen = 'no error'; } catch (e) { out.listen = [e.name, e.code]; }
      const nsm = await NsmSimulator.create();
      const brokerKey = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' });
      const agent = await createAgent({ brokerKey, nsm, transport: tunnelTransport(parseTransport('vsock:3:8000', connectVsock), 'broker.internal:8443') });
      try { await agent.getSecret('db'); out.agent = 'no error'; } catch (e) { out.agent = [e.code, e.cause?.code, e.cause?.cause?.code]; }
      await agent.close();
      console.log(JSON.stringify(out));
    `;
    const r = await run(process.execPath, ['--input-type=module', '-e', script]);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown[]>;
    expect(out.connect).toEqual(['NativeAddonMissingError', 'NATIVE_ADDON_MISSING', true, true]);
    expect(out.nsm).toEqual(['NativeAddonMissingError', 'NATIVE_ADDON_MISSING', true, true]);
    expect(out.listen).toEqual(['NativeAddonMissingError', 'NATIVE_ADDON_MISSING']);
    expect(out.agent![0]).toBe('BROKER_UNREACHABLE');
    expect(out.agent).toContain('NATIVE_ADDON_MISSING');
  });

  it('keygate forward --listen tcp: relays on Node streams without the addon (its splice relay is optional)', async () => {
    const { createServer, connect } = await import('node:net');
    const echo = createServer((s) => s.pipe(s));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    const echoPort = (echo.address() as { port: number }).port;
    const child = spawn(join(app, 'node_modules/.bin/keygate'), ['forward', '--listen', 'tcp:127.0.0.1:0', '--allow', `127.0.0.1:${echoPort}`], { cwd: app, env });
    try {
      const line = await new Promise<RegExpMatchArray>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /listening on tcp:127\.0\.0\.1:(\d+).*; relay: (\w+)\n/.exec(out);
          if (m) resolve(m);
        });
        child.once('exit', (code) => reject(new Error(`keygate forward exited ${code}: ${out}`)));
      });
      expect(line[2]).toBe('streams');
      const reply = await new Promise<string>((resolve, reject) => {
        const s = connect(Number(line[1]), '127.0.0.1');
        let got = '';
        s.on('error', reject);
        s.on('data', (d: Buffer) => {
          got += d.toString('latin1');
          if (got.endsWith('ping')) {
            s.destroy();
            resolve(got);
          }
        });
        s.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\nping`);
      });
      expect(reply).toBe('HTTP/1.1 200 Connection Established\r\n\r\nping');
    } finally {
      child.kill('SIGKILL');
      echo.close();
    }
  });

  it('keygate forward --listen vsock:PORT refuses with the build instructions', async () => {
    const r = await keygate('forward', '--listen', 'vsock:8000', '--allow', 'broker.internal:8443');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('not built');
    expect(r.stderr).toContain('npm run build:native');
  });
});
