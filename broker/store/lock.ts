import { readFile, rm, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createFileExclusive } from './atomic.js';

/**
 * An exclusive lock file that knows its holder.
 *
 * Why not proper-lockfile: it judges a lock stale by mtime age (its holder
 * touches the file on a timer), so a lock left by a killed process blocks
 * everyone for the stale period, and a holder that misses a few ticks under
 * load is displaced while still alive. We need the opposite: a dead holder's
 * lock is taken over at once, a live holder is never displaced.
 *
 * Design:
 * - The lock file holds its owner: pid, the process start time from
 *   /proc/<pid>/stat (so a reused pid is not mistaken for the holder), the
 *   hostname and boot id, and a random token. It is created atomically with
 *   its content (temp file + link), so a reader never sees a half-written one.
 * - On this host a holder is dead when kill(pid, 0) says so, when the pid now
 *   belongs to a process with another start time, or when the machine has
 *   rebooted since (boot id). A live holder is waited for, never displaced.
 * - A lock from another hostname (a shared filesystem) cannot be checked; it
 *   is judged by age (`foreignStaleMs`, default never).
 * - Breaking a dead holder's lock: create `<lock>.break.<token>` exclusively
 *   (one breaker per dead token; itself a lock file with the breaker as owner,
 *   broken by the same rule if its breaker dies), re-read the lock and remove
 *   it only if it still carries the dead token, remove the marker, then
 *   compete for the lock like everyone else.
 * - Release removes the lock only while it still carries the holder's token.
 */

export interface LockOwner {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot), or null where /proc is absent. */
  readonly start: string | null;
  readonly host: string;
  readonly boot: string | null;
  readonly token: string;
}

export interface LockOptions {
  /** How long to wait for a live holder before giving up (0: do not wait). */
  readonly waitMs?: number;
  /** Age after which a lock from another hostname counts as abandoned; default Infinity (never). */
  readonly foreignStaleMs?: number;
  /** Test hook, awaited at the named steps of breaking a dead holder's lock. */
  readonly onBreakStep?: (step: 'read-dead' | 'confirmed-dead') => Promise<void>;
}

/** The lock is held by a live process (or could not be judged abandoned) and waiting did not help. */
export class LockBusyError extends Error {
  override readonly name = 'LockBusyError';
  constructor(
    readonly path: string,
    readonly holder: LockOwner | undefined,
  ) {
    super(`${path} is held by ${holder ? describeOwner(holder) : 'another process'}`);
  }
}

export function describeOwner(o: LockOwner): string {
  return `pid ${o.pid} on ${o.host}`;
}

/** A lock this process holds. */
export interface HeldLock {
  readonly path: string;
  readonly owner: LockOwner;
  /** Removes the lock if (and only if) it still carries this holder's token. Idempotent. */
  release(): Promise<void>;
}

function readOptional(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

/** The start time of `pid` as the kernel reports it, or null if unknown. */
function processStart(pid: number | 'self'): string | null {
  const stat = readOptional(`/proc/${pid}/stat`);
  if (stat === null) return null;
  // comm (field 2) may contain spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null; // field 22 overall
}

const BOOT = readOptional('/proc/sys/kernel/random/boot_id');
const HOST = hostname();

function newOwner(): LockOwner {
  return { pid: process.pid, start: processStart('self'), host: HOST, boot: BOOT, token: randomBytes(16).toString('hex') };
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.pid !== 'number' || typeof o.host !== 'string' || typeof o.token !== 'string') return undefined;
    return { pid: o.pid, start: typeof o.start === 'string' ? o.start : null, host: o.host, boot: typeof o.boot === 'string' ? o.boot : null, token: o.token };
  } catch {
    return undefined;
  }
}

/** True when the process that wrote `owner` on this host has certainly exited. */
function isDeadLocal(owner: LockOwner): boolean {
  if (owner.boot !== null && BOOT !== null && owner.boot !== BOOT) return true;
  if (owner.pid === process.pid) return owner.start !== null && owner.start !== processStart('self');
  try {
    process.kill(owner.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
    // EPERM: it exists, owned by someone else.
  }
  const start = processStart(owner.pid);
  return owner.start !== null && start !== null && start !== owner.start;
}

interface Found {
  /** Present when the lock file parsed. */
  readonly owner: LockOwner | undefined;
  readonly mtimeMs: number;
}

async function readLock(path: string): Promise<Found | null> {
  try {
    const [text, info] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    return { owner: parseOwner(text), mtimeMs: info.mtimeMs };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Whether a lock found on disk is abandoned. A lock that does not parse was
 * written by something else (keygate writes it whole, atomically): judged by
 * age like a foreign lock, and so are locks from other hosts.
 */
function isAbandoned(found: Found, foreignStaleMs: number): boolean {
  const { owner } = found;
  if (owner && owner.host === HOST) return isDeadLocal(owner);
  return Date.now() - found.mtimeMs > foreignStaleMs;
}

/**
 * Removes the lock at `path` if it still carries `dead`'s token, as the only
 * breaker of that token. Returns false without doing anything when another
 * process is breaking it (the caller waits a moment and retries).
 */
async function breakLock(path: string, dead: Found, options: LockOptions): Promise<boolean> {
  const token = dead.owner?.token ?? `mtime-${dead.mtimeMs}`;
  const marker = `${path}.break.${token}`;
  await options.onBreakStep?.('read-dead');
  const me = newOwner();
  if (!(await createFileExclusive(marker, JSON.stringify(me)))) {
    // Someone else is breaking this token. If that breaker died mid-way, its marker is itself a dead lock.
    const other = await readLock(marker);
    if (other && isAbandoned(other, options.foreignStaleMs ?? Infinity)) await breakLock(marker, other, options);
    return false;
  }
  try {
    const now = await readLock(path);
    const still = now && (dead.owner ? now.owner?.token === dead.owner.token : !now.owner && now.mtimeMs === dead.mtimeMs);
    if (still) {
      await options.onBreakStep?.('confirmed-dead');
      await rm(path, { force: true });
    }
    return true;
  } finally {
    await removeIfOwned(marker, me.token);
  }
}

async function removeIfOwned(path: string, token: string): Promise<void> {
  const found = await readLock(path).catch(() => null);
  if (found?.owner?.token === token) await rm(path, { force: true });
}

/** Polls with a short, growing delay; no busy loop. */
const pause = (attempt: number): Promise<void> => new Promise((r) => setTimeout(r, Math.min(10 + attempt * 5, 100)));

/**
 * Takes the lock file at `path`, waiting up to `waitMs` for a live holder.
 *
 * @throws LockBusyError when a live holder keeps it past `waitMs`
 */
export async function acquireLock(path: string, options: LockOptions = {}): Promise<HeldLock> {
  const deadline = Date.now() + (options.waitMs ?? 10_000);
  const owner = newOwner();
  for (let attempt = 0; ; attempt++) {
    if (await createFileExclusive(path, JSON.stringify(owner))) {
      let released = false;
      return {
        path,
        owner,
        release: async () => {
          if (released) return;
          released = true;
          await removeIfOwned(path, owner.token);
        },
      };
    }
    const found = await readLock(path);
    if (found === null) continue; // released between our create and read: compete again at once
    if (isAbandoned(found, options.foreignStaleMs ?? Infinity)) {
      if (!(await breakLock(path, found, options))) await pause(attempt);
      continue;
    }
    if (Date.now() >= deadline) throw new LockBusyError(path, found.owner);
    await pause(attempt);
  }
}

/** Age after which the store lock of another host is taken as abandoned (store updates take milliseconds). */
export const STORE_LOCK_FOREIGN_STALE_MS = 30_000;

/**
 * Runs `fn` holding the lock file `<dir>/.lock`, so read-modify-write updates
 * from concurrent CLI runs and brokers do not lose each other's changes.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(join(dir, '.lock'), { waitMs: 10_000, foreignStaleMs: STORE_LOCK_FOREIGN_STALE_MS }).catch((err: unknown) => {
    if (err instanceof LockBusyError) throw new Error(`store is locked by another process (${err.message})`);
    throw err;
  });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
