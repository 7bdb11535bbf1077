/**
 * Durable file helpers: atomic replace, exclusive create, directory fsync.
 * A leaf module: it imports node builtins only, nothing from the project, so
 * every part (broker store, audit, keys, the NSM simulator's PKI store) can
 * share it without depending on each other.
 */
import { link, open, rename, rm, mkdir } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** Writes `data` to a fresh, fsynced temp file beside `path` and returns its name. */
async function writeDurableTemp(path: string, data: string | Uint8Array, mode: number): Promise<string> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(tmp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    // A full disk or a file-size limit: leave no half-written temp file behind.
    await handle.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  return tmp;
}

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the
 * old file or the new one, never a mix: write a temp file in the same
 * directory, fsync it, rename it over the target, fsync the directory.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const dir = dirname(path);
  const tmp = await writeDurableTemp(path, data, mode);
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDirectory(dir);
}

/**
 * Creates `path` with `data` only if it does not exist yet, atomically: a
 * concurrent reader sees no file or the whole file, and of two processes
 * racing to create it exactly one wins. Returns false when the file existed.
 */
export async function createFileExclusive(path: string, data: string | Uint8Array, mode = 0o600): Promise<boolean> {
  const dir = dirname(path);
  const tmp = await writeDurableTemp(path, data, mode);
  try {
    await link(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await rm(tmp, { force: true });
  }
  await syncDirectory(dir);
  return true;
}

/** fsync a directory so a rename or create in it survives a crash. */
export async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Creates `dir` (and parents) with owner-only permissions if missing. */
export async function ensureDirectory(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}
