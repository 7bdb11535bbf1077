/** The published entry point: `import { verifyAttestation } from 'keygate'` through the exports map. */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fixturePath, realDocuments } from './support/fixtures.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

describe('package entry point', () => {
  it('resolves "keygate" to the built verifier with its types and bundled root', () => {
    const entry = realDocuments[0]!;
    const script = `
      import { verifyAttestation, AttestationError, AWS_NITRO_ROOT_G1_PEM, ATTESTATION_ERROR_CODES } from 'keygate';
      import { readFileSync } from 'node:fs';
      const doc = verifyAttestation(readFileSync(${JSON.stringify(fixturePath(entry.file))}), { at: ${entry.timestamp_ms} });
      let code = null;
      try { verifyAttestation(new Uint8Array([1, 2, 3]), { at: 0 }); } catch (e) { code = e instanceof AttestationError ? e.code : 'wrong'; }
      console.log(JSON.stringify({ moduleId: doc.moduleId, code, root: AWS_NITRO_ROOT_G1_PEM.includes('BEGIN CERTIFICATE'), codes: ATTESTATION_ERROR_CODES.length }));
    `;
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8' });
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout)).toEqual({ moduleId: entry.module_id, code: 'MALFORMED_COSE', root: true, codes: 11 });
  });
});
