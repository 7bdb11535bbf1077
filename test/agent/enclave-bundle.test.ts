/**
 * The measured enclave image holds one bundled file built from `keygate/agent` alone (issue 16):
 * `npm run build:enclave` (scripts/build-enclave.mjs, esbuild) -> dist-enclave/app.mjs. Its inputs hold no
 * broker code but the wire contract, no CLI, no hono, no AWS SDK; a change under broker/ or cli/ leaves its
 * bytes unchanged while a change to the agent does not; two builds give the same bytes; and
 * Dockerfile.enclave's final image consists of that bundle, the broker key and the addon, nothing else.
 * (No Docker engine here: the Dockerfile is parsed, not built.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isBuiltin } from 'node:module';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const ADDON = join(ROOT, 'vsock-shim/native/build/Release/keygate_vsock.node');

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function run(command: string, args: readonly string[], cwd: string, timeoutMs = 120_000): Promise<Run> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, NODE_OPTIONS: '' } });
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

let work: string;

/** Builds the bundle of the checkout at `root` into a fresh directory; returns that directory. */
async function buildBundle(root: string, name: string): Promise<string> {
  const out = join(work, name);
  const r = await run(process.execPath, [join(root, 'scripts/build-enclave.mjs'), '--outdir', out], root);
  expect(r.code, r.stderr).toBe(0);
  return out;
}

const sha256 = (file: string): string => createHash('sha256').update(readFileSync(file)).digest('hex');

/** Every `.ts` file under `dir` (relative to `root`). */
function tsFiles(root: string, dir: string): string[] {
  return readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const path = posix.join(dir, e.name);
    if (e.isDirectory()) return tsFiles(root, path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

/** A copy of the sources the repository consists of (no node_modules, dist or built addon), node_modules linked. */
function copyCheckout(name: string): string {
  const copy = join(work, name);
  mkdirSync(copy);
  for (const entry of ['package.json', 'index.ts', 'lib', 'broker', 'cli', 'enclave-agent', 'vsock-shim', 'testing', 'examples', 'scripts']) {
    cpSync(join(ROOT, entry), join(copy, entry), { recursive: true, filter: (src) => !src.includes(`${join('native', 'build')}`) });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'), 'dir');
  return copy;
}

let repoBuild: string;
let meta: { inputs: Record<string, unknown>; outputs: Record<string, { imports: Array<{ path: string; external?: boolean }> }> };

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'keygate-enclave-bundle-'));
  repoBuild = await buildBundle(ROOT, 'repo');
  meta = JSON.parse(readFileSync(join(repoBuild, 'app.meta.json'), 'utf8')) as typeof meta;
}, 180_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the enclave bundle (npm run build:enclave)', () => {
  it('is built from keygate/agent alone: no broker code but broker/protocol, no cli, no hono, no AWS SDK', () => {
    const inputs = Object.keys(meta.inputs);
    expect(inputs).toContain('examples/enclave-app/server.mjs');
    expect(inputs).toContain('enclave-agent/agent.ts');
    expect(inputs).toContain('vsock-shim/vsock.ts');
    expect(inputs.filter((f) => f.startsWith('broker/') && !f.startsWith('broker/protocol/'))).toEqual([]);
    expect(inputs.filter((f) => f.startsWith('cli/') || f.startsWith('testing/') || f === 'index.ts' || f.startsWith('vsock-shim/simulator/'))).toEqual([]);
    expect(inputs.filter((f) => /node_modules\/(hono|@hono|@aws-sdk|@smithy|@aws-crypto|@peculiar|cbor-extract)\b/.test(f))).toEqual([]);
    // Only jose and cbor-x come from node_modules.
    expect([...new Set(inputs.filter((f) => f.startsWith('node_modules/')).map((f) => f.split('/')[1]))].sort()).toEqual(['cbor-x', 'jose']);
    // What stays outside the bundle: Node's built-ins, and cbor-x's optional native decoder (not in the image: cbor-x falls back to JavaScript).
    const externals = [...new Set(Object.values(meta.outputs).flatMap((o) => o.imports.filter((i) => i.external).map((i) => i.path)))];
    expect(externals.filter((p) => !isBuiltin(p) && p !== 'cbor-extract')).toEqual([]);
    expect(readdirSync(repoBuild).sort()).toEqual(['app.meta.json', 'app.mjs', 'broker-key.jwk']);
  });

  it('is deterministic: a second build gives the same bytes', async () => {
    const again = await buildBundle(ROOT, 'repo-again');
    expect(sha256(join(again, 'app.mjs'))).toBe(sha256(join(repoBuild, 'app.mjs')));
    // The same inputs, byte for byte (the metafile's output names carry the output directory).
    expect(JSON.parse(readFileSync(join(again, 'app.meta.json'), 'utf8')).inputs).toEqual(meta.inputs);
  });

  it('a change under broker/ (code and comments, every file but broker/protocol) or cli/ leaves its bytes unchanged; a change to the agent does not', async () => {
    const expected = sha256(join(repoBuild, 'app.mjs'));
    // A side effect at the top of a module survives bundling whenever the module is in the bundle.
    const change = '\n/*! changed */\n// changed\n(globalThis as Record<string, unknown>).__keygateChanged = true;\n';

    const brokerChanged = copyCheckout('broker-changed');
    const changed = [...tsFiles(brokerChanged, 'broker').filter((f) => !f.startsWith('broker/protocol/')), ...tsFiles(brokerChanged, 'cli')];
    expect(changed.length).toBeGreaterThan(40);
    for (const file of changed) appendFileSync(join(brokerChanged, file), change);
    expect(sha256(join(await buildBundle(brokerChanged, 'out-broker-changed'), 'app.mjs'))).toBe(expected);

    // The control: the same change to an agent module changes the bundle (so the comparison can fail).
    const agentChanged = copyCheckout('agent-changed');
    appendFileSync(join(agentChanged, 'enclave-agent/agent.ts'), change);
    expect(sha256(join(await buildBundle(agentChanged, 'out-agent-changed'), 'app.mjs'))).not.toBe(expected);
  }, 180_000);

  it('runs: with no addon beside it the app stops on NATIVE_ADDON_MISSING; with the addon at the image\'s path it reaches /dev/nsm', async () => {
    const app = join(work, 'run');
    mkdirSync(app);
    for (const f of ['app.mjs', 'broker-key.jwk']) copyFileSync(join(repoBuild, f), join(app, f));
    const bare = await run(process.execPath, ['app.mjs'], app);
    expect(bare.code).not.toBe(0);
    expect(bare.stderr).toContain("code: 'NATIVE_ADDON_MISSING'");
    expect(bare.stderr).toContain('npm run build:native');

    if (!existsSync(ADDON) || existsSync('/dev/nsm')) return;
    mkdirSync(join(app, 'native/build/Release'), { recursive: true });
    copyFileSync(ADDON, join(app, 'native/build/Release/keygate_vsock.node'));
    const withAddon = await run(process.execPath, ['app.mjs'], app);
    expect(withAddon.code).not.toBe(0);
    expect(withAddon.stderr).toContain("code: 'NSM_UNAVAILABLE'");
  });
});

/** Dockerfile.enclave's instructions, continuation lines joined, comments dropped. */
function instructions(): string[] {
  return readFileSync(join(ROOT, 'Dockerfile.enclave'), 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

describe('Dockerfile.enclave', () => {
  const all = instructions();
  const finalFrom = all.map((l) => l.startsWith('FROM ')).lastIndexOf(true);
  const build = all.slice(0, finalFrom);
  const final = all.slice(finalFrom);
  /** [sources, destination] of each COPY, flags (--from=...) dropped. */
  const copies = (lines: string[]): Array<{ from?: string; sources: string[]; dest: string }> =>
    lines
      .filter((l) => l.startsWith('COPY '))
      .map((l) => {
        const words = l.split(/\s+/).slice(1);
        const from = words.find((w) => w.startsWith('--from='))?.slice('--from='.length);
        const paths = words.filter((w) => !w.startsWith('--'));
        return { ...(from ? { from } : {}), sources: paths.slice(0, -1), dest: paths.at(-1)! };
      });

  it('the image\'s own files are exactly the bundle, the broker key and the addon', () => {
    const files = copies(final).flatMap((c) => {
      expect(c.from).toBe('build');
      return c.dest.endsWith('/') ? c.sources.map((s) => posix.join(c.dest, posix.basename(s))) : [c.dest];
    });
    expect(files.sort()).toEqual(['/app/app.mjs', '/app/broker-key.jwk', '/app/native/build/Release/keygate_vsock.node']);
    expect(copies(final).flatMap((c) => c.sources).filter((s) => /broker\/(?!protocol)|\/cli\/|node_modules|\/dist\//.test(s.replace('broker-key.jwk', '')))).toEqual([]);
    expect(final.filter((l) => /^(RUN|ADD)\b/.test(l))).toEqual([]);
    expect(final.at(-1)).toBe('CMD ["node", "app.mjs"]');
    // The addon lands where the bundled vsock-shim looks first (relative to the bundle).
    expect(readFileSync(join(ROOT, 'vsock-shim/vsock.ts'), 'utf8')).toContain("'./native/build/Release/keygate_vsock.node'");
  });

  it('the build stage takes no broker code but broker/protocol and no cli from the context, and bundles with build:enclave', () => {
    const sources = copies(build).filter((c) => !c.from).flatMap((c) => c.sources);
    expect(sources.filter((s) => (s.startsWith('broker') && !s.startsWith('broker/protocol')) || s.startsWith('cli') || s === '.' || s === 'testing' || s === 'index.ts')).toEqual([]);
    expect(build.some((l) => /^RUN npm run build:enclave\b/.test(l))).toBe(true);
    // Every project file the bundle is made of reaches the build stage (else the image build fails, or worse, differs).
    const covered = (file: string): boolean => sources.some((s) => file === s || file.startsWith(`${s.replace(/\/$/, '')}/`));
    const projectInputs = Object.keys(meta.inputs).filter((f) => !f.startsWith('node_modules/'));
    expect(projectInputs.filter((f) => !covered(f))).toEqual([]);
    expect(covered('scripts/build-enclave.mjs')).toBe(true);
    expect(build.some((l) => /\btsc\b/.test(l))).toBe(false);
    // Nothing built on the host reaches the context.
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n');
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', 'dist-enclave', 'vsock-shim/native/build']));
  });

  it('pins esbuild exactly in package.json, and build:enclave runs the bundling script', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string>; scripts: Record<string, string> };
    expect(pkg.devDependencies.esbuild).toMatch(/^\d+\.\d+\.\d+$/);
    expect(pkg.scripts['build:enclave']).toBe('node scripts/build-enclave.mjs');
    const installed = JSON.parse(readFileSync(join(ROOT, 'node_modules/esbuild/package.json'), 'utf8')) as { version: string };
    expect(installed.version).toBe(pkg.devDependencies.esbuild);
  });
});
