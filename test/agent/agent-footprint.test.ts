/** The agent ships inside the measured enclave image: its module graph must stay free of the broker's dependencies. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';

const DIST = fileURLToPath(new URL('../../dist/', import.meta.url));

function graph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string): void => {
    if (files.has(file)) return;
    files.add(file);
    const source = readFileSync(file, 'utf8');
    for (const m of source.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"]([^'"]+)['"]/g)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) visit(resolve(dirname(file), spec));
      else packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  };
  visit(entry);
  return { files, packages };
}

describe('keygate/agent', () => {
  it('imports no hono, no AWS SDK and nothing from the broker but its wire contract (broker/protocol)', () => {
    const { files, packages } = graph(`${DIST}enclave-agent/index.js`);
    const external = [...packages].filter((p) => !p.startsWith('node:'));
    expect(external.sort()).toEqual(['cbor-x', 'jose']);
    const fromBroker = [...files].filter((f) => f.includes('/broker/'));
    expect(fromBroker.filter((f) => !f.startsWith(`${DIST}broker/protocol/`))).toEqual([]);
    expect(fromBroker.length).toBeGreaterThan(0);
  });

  it('is importable as "keygate/agent"', () => {
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', "import { createAgent, AgentError, tunnelTransport } from 'keygate/agent'; console.log(typeof createAgent, typeof AgentError, typeof tunnelTransport)"], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      encoding: 'utf8',
    });
    expect(run.stdout.trim()).toBe('function function function');
  });
});
