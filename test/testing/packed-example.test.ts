/**
 * The README's testing example (examples/testing/app.test.ts), run verbatim by vitest against the PACKED
 * package, imported by name as an application would: `npm pack`, the tarball unpacked into a temporary
 * app's node_modules/keygate, keygate's dependencies linked beside it from this repo's node_modules.
 * First with its production dependencies only (keygate/testing must load without vitest or any other
 * development dependency), then with the app's test tooling (vitest, typescript, @types/node) added.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const EXAMPLE = join(ROOT, 'examples/testing/app.test.ts');

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to completion (bounded), with an environment free of this vitest run's own variables. */
function run(command: string, args: readonly string[], cwd: string, env: Record<string, string> = {}, timeoutMs = 180_000): Promise<Run> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST') && k !== 'NODE_OPTIONS' && k !== 'TEST'));
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd, env: { ...clean, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Top-level packages of this repo's lockfile, split into runtime and development-only ones. */
function lockedPackages(): { runtime: string[]; dev: string[] } {
  const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean }> };
  const top = Object.entries(lock.packages).filter(([path]) => /^node_modules\/(?:@[^/]+\/)?[^/]+$/.test(path));
  const names = (dev: boolean): string[] => top.filter(([, p]) => (p.dev === true) === dev).map(([path]) => path.slice('node_modules/'.length));
  return { runtime: names(false), dev: names(true) };
}

/** Links `names` from this repo's node_modules into `modules` (those not installed here, e.g. other platforms' optional packages, are skipped). */
function link(modules: string, names: readonly string[]): void {
  for (const name of names) {
    const target = join(ROOT, 'node_modules', name);
    if (!existsSync(target)) continue;
    mkdirSync(dirname(join(modules, name)), { recursive: true });
    symlinkSync(target, join(modules, name), 'dir');
  }
}

let work: string;
let app: string;
let tarball: string;

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'keygate-packed-'));
  app = join(work, 'app');
  // --ignore-scripts: dist/ is built already (pretest); packing must not rebuild it under a running suite.
  const pack = spawnSync('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', work], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  expect(pack.status, pack.stderr).toBe(0);
  const packed = (JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>)[0]!;
  expect(packed.files.map((f) => f.path)).toEqual(expect.arrayContaining(['dist/testing/index.js', 'dist/testing/index.d.ts', 'dist/testing/kit.js', 'dist/testing/kit.d.ts']));
  tarball = join(work, packed.filename);
  const unpacked = join(app, 'node_modules', 'keygate');
  mkdirSync(unpacked, { recursive: true });
  const tar = spawnSync('tar', ['-xzf', tarball, '-C', unpacked, '--strip-components=1'], { encoding: 'utf8' });
  expect(tar.status, tar.stderr).toBe(0);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'my-enclave-app', private: true, type: 'module' }));
  link(join(app, 'node_modules'), lockedPackages().runtime);
});

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('keygate/testing from the packed package', () => {
  it('loads with keygate\'s runtime dependencies only (no vitest, no other development dependency) and releases a secret end to end', async () => {
    expect(existsSync(join(app, 'node_modules', 'vitest'))).toBe(false);
    const script = `
      import { startTestKit, NsmSimulator, devPcrs, openDevPki } from 'keygate/testing';
      import { createAgent, AgentError } from 'keygate/agent';
      const kit = await startTestKit({ warn: () => {} });
      await kit.bind('db', 'hunter2');
      const agent = await createAgent(kit.agentOptions());
      const value = await agent.getSecret('db');
      let code;
      try { await (await kit.agent()).getSecret('nope'); } catch (e) { code = e instanceof AgentError ? e.code : 'not an AgentError'; }
      await agent.close();
      await kit.close();
      console.log(JSON.stringify({ value, code, simulator: typeof NsmSimulator.create, pcr0: devPcrs()[0].length, pki: typeof openDevPki }));
    `;
    const out = await run(process.execPath, ['--input-type=module', '-e', script], app);
    expect(out.stderr).toBe('');
    expect(JSON.parse(out.stdout)).toEqual({ value: 'hunter2', code: 'POLICY_DENIED', simulator: 'function', pcr0: 96, pki: 'function' });
  });

  it('runs the README example (examples/testing/app.test.ts) verbatim with vitest; its types check; it writes nothing to the app directory and leaves no temporary state', async () => {
    link(join(app, 'node_modules'), lockedPackages().dev);
    copyFileSync(EXAMPLE, join(app, 'app.test.ts'));
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true, types: ['node'], skipLibCheck: true }, include: ['app.test.ts'] }),
    );
    const tmp = join(work, 'tmp');
    mkdirSync(tmp);
    const before = readdirSync(app).sort();

    const tsc = await run(process.execPath, [join(app, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], app);
    expect(tsc.stdout + tsc.stderr).toBe('');
    expect(tsc.code).toBe(0);

    // Generous timeouts for a loaded machine; the example file itself is unchanged.
    const vitest = await run(process.execPath, [join(app, 'node_modules/vitest/vitest.mjs'), 'run', '--reporter=json', '--testTimeout=60000', '--hookTimeout=60000'], app, { TMPDIR: tmp });
    expect(vitest.code, vitest.stderr).toBe(0);
    const report = JSON.parse(vitest.stdout.slice(vitest.stdout.indexOf('{'))) as { success: boolean; numPassedTests: number; numFailedTests: number; testResults: Array<{ name: string }> };
    expect(report).toMatchObject({ success: true, numPassedTests: 2, numFailedTests: 0 });
    expect(report.testResults.map((r) => r.name)).toEqual([join(app, 'app.test.ts')]);
    expect(vitest.stderr).toContain('*** NSM SIMULATOR: attestation documents are signed by a development PKI, not by AWS.');

    expect(readdirSync(app).sort()).toEqual(before);
    expect(readdirSync(tmp).filter((n) => n.startsWith('keygate'))).toEqual([]);
  });

  it.skipIf(!readFileSync(join(ROOT, 'README.md'), 'utf8').includes('## Testing your enclave app'))('the README section "Testing your enclave app" shows examples/testing/app.test.ts verbatim', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Testing your enclave app'));
    const block = /```ts\n([\s\S]*?)```/.exec(section);
    expect(block?.[1]).toBe(readFileSync(EXAMPLE, 'utf8'));
  });
});
