// The real-document suites read ../shared/fixtures/nitro beside the work tree.
// A copy of the project without it (a mutation-testing sandbox, a partial
// checkout) must fail loudly here rather than run with those suites missing.
// Deliberately does not import test/support/fixtures.ts, which throws on load.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const FIXTURE_DIR = fileURLToPath(new URL('../../../shared/fixtures/nitro/', import.meta.url));

describe('Nitro fixtures', () => {
  it('are present beside the work tree, with real documents and the root', () => {
    expect(existsSync(join(FIXTURE_DIR, 'manifest.json')), `missing ${FIXTURE_DIR}manifest.json`).toBe(true);
    const manifest = JSON.parse(readFileSync(join(FIXTURE_DIR, 'manifest.json'), 'utf8')) as { root: { file: string }; documents: Array<{ file: string }> };
    const real = manifest.documents.filter((d) => d.file.startsWith('real-'));
    expect(real.length).toBeGreaterThan(0);
    for (const d of manifest.documents) expect(existsSync(join(FIXTURE_DIR, d.file)), d.file).toBe(true);
    expect(existsSync(join(FIXTURE_DIR, manifest.root.file))).toBe(true);
  });
});
