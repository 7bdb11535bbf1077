import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { CodedError } from '../../lib/coded-error.js';

/**
 * Reading a file of the file store without trusting what sits at its path.
 *
 * A store file is read on every change, by the broker's one shared refresh (every release and /readyz wait
 * for it) and by `keygate store copy`: a FIFO there would block the read forever, a device (or a link to
 * /dev/zero) would be read until memory runs out. So only regular files are read, never through a symbolic
 * link (an admin who wants one can copy the file), and only up to a size cap.
 */

/** The largest store file read or written (a binding, baseline, revocation list or reserved-version record). */
export const MAX_STORE_FILE_BYTES = 1024 * 1024;

/** Why a store entry is not read; the caller reports it as a StoreProblem of that entry. */
export class StoreFileRefused extends CodedError<'STORE_FILE_REFUSED'> {
  override readonly name = 'StoreFileRefused';
  constructor(message: string) {
    super('STORE_FILE_REFUSED', message);
  }
}

const SYMLINK_REFUSAL = 'a symbolic link: keygate reads only regular files in the store (copy the file in place of the link)';

/** The refusal for what an lstat/fstat shows, or undefined for a regular file within the cap. */
export function refusalOf(info: BigIntStats): string | undefined {
  if (info.isSymbolicLink()) return SYMLINK_REFUSAL;
  if (!info.isFile()) return 'not a regular file (a FIFO, device, socket or directory): keygate reads only regular files in the store';
  if (info.size > BigInt(MAX_STORE_FILE_BYTES)) return `${info.size} bytes: larger than a store file may be (${MAX_STORE_FILE_BYTES} bytes)`;
  return undefined;
}

/**
 * Reads `path` as UTF-8 if it is a regular file of at most MAX_STORE_FILE_BYTES; undefined if it does not
 * exist. Opened with O_NOFOLLOW (a symbolic link fails the open) and O_NONBLOCK (a FIFO opens at once instead
 * of waiting for a writer), then judged by fstat on the open descriptor: what is read is what was checked,
 * whatever replaces the path meanwhile. Throws StoreFileRefused otherwise.
 */
export async function readRegularFile(path: string): Promise<{ text: string; info: BigIntStats } | undefined> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP') throw new StoreFileRefused(SYMLINK_REFUSAL);
    throw err;
  }
  try {
    const info = await handle.stat({ bigint: true });
    const refusal = refusalOf(info);
    if (refusal) throw new StoreFileRefused(refusal);
    // Read at most one byte past the cap: a file that grew since fstat is refused, never read without bound.
    const buffer = Buffer.alloc(Math.min(Number(info.size), MAX_STORE_FILE_BYTES) + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length === buffer.length) break;
    }
    if (length > MAX_STORE_FILE_BYTES) throw new StoreFileRefused(`larger than a store file may be (${MAX_STORE_FILE_BYTES} bytes)`);
    if (length > Number(info.size)) throw new StoreFileRefused('grew while it was read; try again');
    return { text: buffer.subarray(0, length).toString('utf8'), info };
  } finally {
    await handle.close();
  }
}
