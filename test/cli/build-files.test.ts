/** The build files cannot run here (no Docker engine); check the properties reviewers rely on. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (p: string): string => readFileSync(root + p, 'utf8');

describe('Dockerfile.enclave', () => {
  const text = read('Dockerfile.enclave');
  it('pins every base image by digest', () => {
    const froms = [...text.matchAll(/^FROM\s+(\S+)/gm)].map((m) => m[1]!);
    expect(froms.length).toBeGreaterThan(0);
    const image = /ARG NODE_IMAGE=(\S+)/.exec(text)?.[1] ?? '';
    expect(image).toMatch(/@sha256:[0-9a-f]{64}$/);
    for (const f of froms) expect(f === '${NODE_IMAGE}' || /@sha256:[0-9a-f]{64}$/.test(f)).toBe(true);
  });
  it('installs from the lockfile, honours SOURCE_DATE_EPOCH, and fetches nothing at run time', () => {
    expect(text).toMatch(/npm ci/);
    expect(text).not.toMatch(/npm install\b/);
    expect(text).toMatch(/SOURCE_DATE_EPOCH/);
    const runtime = text.slice(text.lastIndexOf('FROM '));
    expect(runtime).not.toMatch(/\bRUN\b/);
    expect(runtime).toMatch(/CMD \["node", "examples\/enclave-app\/server\.mjs"\]/);
  });
});

describe('examples/ci workflow', () => {
  const text = read('examples/ci/build-enclave.yml');
  it('builds, records a signed baseline, cross-checks nitro-cli, and proves reproducibility', () => {
    expect(text).toMatch(/Dockerfile\.enclave/);
    expect(text).toMatch(/nitro-cli build-enclave/);
    expect(text).toMatch(/keygate record --eif enclave\.eif[^\n]*\\\n[^\n]*--sign-key/);
    expect(text).toMatch(/keygate record --check nitro-cli\.json/);
    expect(text).toMatch(/keygate record --check enclave\.eif/);
    expect(text).toMatch(/rewrite-timestamp=true/);
  });
});

describe('examples/enclave-app', () => {
  it('parses, and uses only what keygate/agent exports', async () => {
    const source = read('examples/enclave-app/server.mjs');
    const { spawnSync } = await import('node:child_process');
    expect(spawnSync(process.execPath, ['--check', root + 'examples/enclave-app/server.mjs']).status).toBe(0);
    const imported = /import \{([^}]+)\} from 'keygate\/agent'/.exec(source)![1]!.split(',').map((n) => n.trim());
    const agent = (await import('../../enclave-agent/index.js')) as Record<string, unknown>;
    for (const name of imported) expect(typeof agent[name], name).toBe('function');
    expect(JSON.parse(read('examples/enclave-app/broker-key.jwk'))).toMatchObject({ kty: 'OKP', crv: 'Ed25519' });
  });
});
