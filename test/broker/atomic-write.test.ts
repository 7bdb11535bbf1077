/** Atomic writes under a full disk / file-size limit: the old file stays, and no temp file is left behind. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ATOMIC = fileURLToPath(new URL('../../dist/lib/durable-fs.js', import.meta.url));

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-atomic-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('writeFileAtomic under RLIMIT_FSIZE', () => {
  it('fails with the cause, keeps the old content, and leaves no temp file', () => {
    const target = join(dir, 'binding.json');
    writeFileSync(target, 'old');
    const script = `import { writeFileAtomic } from ${JSON.stringify(ATOMIC)};
      try { await writeFileAtomic(${JSON.stringify(target)}, 'x'.repeat(64 * 1024)); process.exit(0); }
      catch (err) { console.error(err.code); process.exit(3); }`;
    const r = spawnSync('prlimit', ['--fsize=4096', process.execPath, '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
    expect(r.error, 'prlimit (util-linux) must be installed').toBeUndefined();
    expect([r.status, r.stderr.trim()]).toEqual([3, 'EFBIG']);
    expect(readFileSync(target, 'utf8')).toBe('old');
    expect(readdirSync(dir)).toEqual(['binding.json']);
  });
});
