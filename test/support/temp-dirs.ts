/** Temporary directories for the tests of one file, removed when they are done. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/**
 * Call at the top of a test file, before its own hooks: `const tempDir = tempDirs('keygate-x-')`. Each `tempDir()`
 * makes a fresh directory under the OS temp dir; all of them are removed after the file's tests by the afterAll
 * hook this call registers. vitest runs after-hooks last registered first, so the file's own afterAll hooks
 * (closing the brokers and servers that use the directories) run before the removal.
 */
export function tempDirs(prefix: string): () => string {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
}
