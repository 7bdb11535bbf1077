/** The published entry point: `import { verifyAttestation } from 'keygate'` through the exports map. */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixturePath, realDocuments } from './support/fixtures.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('package entry point', () => {
  it('resolves "keygate" to the built verifier with its types and bundled root', () => {
    const entry = realDocuments[0]!;
    const script = `
      import { verifyAttestation, AttestationError, AWS_NITRO_ROOT_G1_PEM, ATTESTATION_ERROR_CODES } from 'keygate';
      import { existsSync, readFileSync } from 'node:fs';
      const doc = verifyAttestation(readFileSync(${JSON.stringify(fixturePath(entry.file))}), { at: ${entry.timestamp_ms} });
      let code = null;
      try { verifyAttestation(new Uint8Array([1, 2, 3]), { at: 0 }); } catch (e) { code = e instanceof AttestationError ? e.code : 'wrong'; }
      console.log(JSON.stringify({ moduleId: doc.moduleId, code, root: AWS_NITRO_ROOT_G1_PEM.includes('BEGIN CERTIFICATE'), codes: ATTESTATION_ERROR_CODES.length }));
    `;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout)).toEqual({ moduleId: entry.module_id, code: 'MALFORMED_COSE', root: true, codes: 11 });
  });

  it('every entry of the exports map (".", "./agent", "./testing") points at built files with their types, compiled from a folder tsconfig.build.json includes', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { exports: Record<string, string | { types: string; import: string }> };
    const include = (JSON.parse(readFileSync(join(ROOT, 'tsconfig.build.json'), 'utf8')) as { include: string[] }).include;
    const entries = Object.entries(pkg.exports).filter((e): e is [string, { types: string; import: string }] => typeof e[1] === 'object');
    expect(entries.map(([name]) => name)).toEqual(['.', './agent', './testing']);
    for (const [name, target] of entries) {
      expect(Object.keys(target), name).toEqual(['types', 'import']);
      for (const file of [target.types, target.import]) expect(existsSync(join(ROOT, file)), `${name}: ${file}`).toBe(true);
      const source = target.import.replace(/^\.\/dist\//, '').replace(/\.js$/, '.ts');
      expect(include.some((dir) => source === dir || source.startsWith(`${dir}/`)), `${name}: ${source} is built`).toBe(true);
    }
  });
});

describe('package metadata', () => {
  it('ships the Apache-2.0 license text that package.json names (npm pack includes LICENSE)', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { license?: string };
    expect(pkg.license).toBe('Apache-2.0');
    const text = readFileSync(join(ROOT, 'LICENSE'), 'utf8');
    expect(text).toMatch(/^\s*Apache License\s+Version 2\.0, January 2004/);
    expect(text).toContain('END OF TERMS AND CONDITIONS');
    const pack = spawnSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' });
    const files = (JSON.parse(pack.stdout) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map((f) => f.path);
    expect(files).toContain('LICENSE');
  });
});
