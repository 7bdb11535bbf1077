/** The build files cannot run here (no Docker engine); check the properties reviewers rely on. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

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
    expect(runtime).toMatch(/CMD \["node", "app\.mjs"\]/);
  });
});

interface Step {
  name?: string;
  uses?: string;
  run?: string;
  env?: Record<string, string>;
  with?: Record<string, string>;
}
interface Job {
  needs?: string | string[];
  steps: Step[];
}

/** The shell commands of a job's `run:` steps, continuation lines joined, comments dropped. */
const commands = (job: Job): string[] =>
  job.steps.flatMap((s) => (s.run ?? '').replace(/ *\\\n\s*/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#')));

describe('examples/ci workflow', () => {
  // Parsed, not matched as text: a command indented into the wrong job or step, or a file that is not YAML, fails here.
  it('builds, records a signed baseline, cross-checks nitro-cli, and proves reproducibility', () => {
    const workflow = parseYaml(read('examples/ci/build-enclave.yml'), { strict: true, uniqueKeys: true }) as { permissions: unknown; jobs: Record<string, Job> };
    expect(workflow.permissions).toEqual({ contents: 'read' });
    expect(Object.keys(workflow.jobs)).toEqual(['build', 'reproduce']);
    const { build, reproduce } = workflow.jobs as { build: Job; reproduce: Job };

    const built = commands(build);
    expect(built.some((c) => /^docker buildx build -f Dockerfile\.enclave .*rewrite-timestamp=true/.test(c))).toBe(true);
    expect(built.some((c) => /nitro-cli build-enclave .*--output-file enclave\.eif/.test(c))).toBe(true);
    const record = build.steps.find((s) => s.run?.includes('keygate record --eif'))!;
    expect(record.env?.CI_SIGNING_KEY).toMatch(/^\$\{\{ secrets\.\w+ \}\}$/);
    expect(commands({ steps: [record] })).toContain('npx keygate record --eif enclave.eif --name "$BASELINE" --image-digest "$(cat image-id.txt)" --commit "$GITHUB_SHA" --sign-key ci-key.jwk');
    expect(built).toContain('npx keygate record --check nitro-cli.json --baseline "$BASELINE"');
    expect(build.steps.find((s) => s.uses?.startsWith('actions/upload-artifact@'))?.with?.path).toBe('pcr-baselines/${{ env.BASELINE }}.json');

    // The second, independent build runs after the first and must reproduce the recorded PCRs.
    expect(reproduce.needs).toBe('build');
    const rebuilt = commands(reproduce);
    expect(rebuilt.some((c) => /^docker buildx build --no-cache -f Dockerfile\.enclave .*rewrite-timestamp=true/.test(c))).toBe(true);
    expect(rebuilt.at(-1)).toBe('npx keygate record --check enclave.eif --baseline "$BASELINE"');
    expect(reproduce.steps.find((s) => s.uses?.startsWith('actions/download-artifact@'))?.with?.path).toBe('pcr-baselines');
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
