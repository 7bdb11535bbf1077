/** The dependency rules of design.md, checked on the sources. */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(join(ROOT, path)).isDirectory()) return name === 'native' ? [] : sources(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1] ?? m[2]!);
}

function internalTargets(file: string): string[] {
  return imports(file)
    .filter((s) => s.startsWith('.'))
    .map((s) => relative(ROOT, resolve(dirname(join(ROOT, file)), s)));
}

describe('architecture', () => {
  it('sees the imports it checks', () => {
    expect(internalTargets('broker/verify/verify.ts')).toContain('broker/verify/chain.js');
    expect(imports('broker/release.ts')).toContain('jose');
    expect(sources('broker').length).toBeGreaterThan(20);
  });

  it('broker/verify imports nothing from the rest of the project and does no I/O', () => {
    for (const file of sources('broker/verify')) {
      for (const target of internalTargets(file)) expect(target.startsWith('broker/verify/'), `${file} -> ${target}`).toBe(true);
      for (const spec of imports(file).filter((s) => !s.startsWith('.'))) {
        expect(['node:crypto', 'cbor-x'], `${file} imports ${spec}`).toContain(spec);
      }
    }
  });

  it('the broker does not depend on the CLI, the agent or the enclave plumbing', () => {
    for (const file of sources('broker')) {
      for (const target of internalTargets(file)) {
        expect(target.startsWith('cli/') || target.startsWith('enclave-agent/') || target.startsWith('vsock-shim/'), `${file} -> ${target}`).toBe(false);
      }
    }
  });

  it('enclave-agent and vsock-shim never import the broker (the agent only its wire contract), hono or the AWS SDK', () => {
    for (const file of [...sources('enclave-agent'), ...sources('vsock-shim')]) {
      const allowed = (target: string): boolean => file.startsWith('enclave-agent/') && target.startsWith('broker/protocol/');
      for (const target of internalTargets(file)) expect((target.startsWith('broker/') && !allowed(target)) || target.startsWith('cli/'), `${file} -> ${target}`).toBe(false);
      for (const spec of imports(file)) expect(/^(hono|@hono\/|@aws-sdk\/)/.test(spec), `${file} imports ${spec}`).toBe(false);
    }
    expect(sources('enclave-agent').flatMap(internalTargets)).toContain('broker/protocol/index.js');
  });

  it('broker/protocol imports nothing: no other project module, no package, no node builtin', () => {
    expect(sources('broker/protocol').length).toBeGreaterThan(0);
    for (const file of sources('broker/protocol')) {
      for (const target of internalTargets(file)) expect(target.startsWith('broker/protocol/'), `${file} -> ${target}`).toBe(true);
      for (const spec of imports(file).filter((s) => !s.startsWith('.'))) expect.fail(`${file} imports ${spec}`);
    }
  });

  it('no errno number is hard-coded in TypeScript: the addon throws system errors (code, errno), numbers come from os.constants', () => {
    const files = ['broker', 'cli', 'enclave-agent', 'vsock-shim'].flatMap(sources);
    expect(files).toContain('vsock-shim/vsock.ts');
    for (const file of files) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      expect(text, `${file} defines an errno constant`).not.toMatch(/\bE[A-Z]{3,}\s*=\s*-?\d+/);
      expect(text, `${file} names an error by its errno number`).not.toMatch(/ERRNO_|errno \$\{/);
    }
  });
});
