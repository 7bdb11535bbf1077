// The bundled AWS root checks itself when the module loads: a substituted or
// corrupted root must stop the process loudly, never be trusted quietly.
// Proven by loading the module's own source with its fingerprint changed.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256 } from '../../broker/verify/aws-root.js';

const SOURCE = fileURLToPath(new URL('../../broker/verify/aws-root.ts', import.meta.url));
const PEM_MODULE = fileURLToPath(new URL('../../broker/verify/pem.ts', import.meta.url));

describe('bundled AWS Nitro root', () => {
  it('matches its published fingerprint', () => {
    expect(createHash('sha256').update(AWS_NITRO_ROOT_G1_DER).digest('hex')).toBe(AWS_NITRO_ROOT_G1_SHA256);
  });

  it('refuses to load when the bundled root does not match its fingerprint', async () => {
    const source = readFileSync(SOURCE, 'utf8');
    expect(source).toContain(AWS_NITRO_ROOT_G1_SHA256);
    const dir = mkdtempSync(join(tmpdir(), 'keygate-aws-root-'));
    try {
      const file = join(dir, 'aws-root-substituted.ts');
      writeFileSync(file, source.replaceAll(AWS_NITRO_ROOT_G1_SHA256, '0'.repeat(64)).replaceAll("'./pem.js'", JSON.stringify(pathToFileURL(PEM_MODULE).href)));
      await expect(import(pathToFileURL(file).href)).rejects.toThrow(/bundled AWS Nitro root fingerprint mismatch: 641a0321/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
