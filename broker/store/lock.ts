import { readFile, rm, stat, utimes } from 'node:fs/promises';
import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { createFileExclusive } from '../../lib/durable-fs.js';
import { CodedError } from '../../lib/coded-error.js';

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
 *   hostname, boot id and pid namespace, and a random token. It is created
 *   atomically with its content (temp file + link), so a reader never sees a
 *   half-written one.
 * - A pid means something only in its own pid namespace of its own kernel:
 *   a holder is checked by pid only when its boot id and pid namespace are
 *   ours (the hostname is then irrelevant). It is dead when kill(pid, 0) says
 *   so or when the pid now belongs to a process with another start time. A
 *   live holder is waited for, never displaced.
 * - Any other holder (another container on this kernel, another boot,
 *   another machine on a shared filesystem) cannot be checked: it is judged
 *   by its heartbeat. Every holder refreshes the lock file's mtime every
 *   `heartbeatMs` while the file still carries its token; a foreign lock whose
 *   mtime is older than `foreignStaleMs` is abandoned. (Clocks of hosts
 *   sharing a filesystem must agree to well within that bound.)
 * - Breaking an abandoned lock: create `<lock>.break.<token>` exclusively
 *   (one breaker per dead token; itself a lock file with the breaker as owner,
 *   broken by the same rule if its breaker dies), re-read the lock and remove
 *   it only if it still carries the dead token and is still abandoned, remove
 *   the marker, then compete for the lock like everyone else.
 * - A heartbeat that finds the lock gone or carrying another token means this
 *   holder was displaced (judged gone while paused, clock trouble): the holder
 *   is told (`onCompromised`, `compromised`) so it can stop using what the
 *   lock guards.
 * - Release removes the lock only while it still carries the holder's token.
 */

export interface LockOwner {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks since boot), or null where /proc is absent. */
  readonly start: string | null;
  readonly host: string;
  readonly boot: string | null;
  /** The pid namespace `pid` belongs to (readlink /proc/self/ns/pid, e.g. "pid:[4026531836]"), or null where unknown. */
  readonly pidns: string | null;
  readonly token: string;
}

export interface LockOptions {
  /** How long to wait for a live holder before giving up (0: do not wait). */
  readonly waitMs?: number;
  /**
   * Heartbeat age (time since the lock file's mtime) after which a lock whose
   * holder cannot be checked by pid (another pid namespace, boot or machine)
   * counts as abandoned; default Infinity (never). Keep it many heartbeats long.
   */
  readonly foreignStaleMs?: number;
  /** How often the holder refreshes its lock file's mtime while it holds it. Default 2000 ms. */
  readonly heartbeatMs?: number;
  /** Called (once) when a heartbeat finds the lock gone or carrying another holder's token. */
  readonly onCompromised?: (reason: string) => void;
  /** Test hook, awaited at the named steps of breaking a dead holder's lock. */
  readonly onBreakStep?: (step: 'read-dead' | 'confirmed-dead') => Promise<void>;
}

/** The lock is held by a live process (or could not be judged abandoned) and waiting did not help. */
export class LockBusyError extends CodedError<'LOCK_BUSY'> {
  override readonly name = 'LockBusyError';
  constructor(
    readonly path: string,
    readonly holder: LockOwner | undefined,
    /** The holder could not be checked by pid; it was judged by its heartbeat, which was still fresh. */
    readonly foreign = false,
  ) {
    super('LOCK_BUSY', `${path} is held by ${holder ? describeOwner(holder) : 'another process'}`);
  }
}

export function describeOwner(o: LockOwner): string {
  return `pid ${o.pid} on ${o.host}`;
}

/** A lock this process holds. */
export interface HeldLock {
  readonly path: string;
  readonly owner: LockOwner;
  /** True once a heartbeat found the lock gone or taken over: whatever it guards is no longer this holder's. */
  readonly compromised: boolean;
  /** Stops the heartbeat and removes the lock if (and only if) it still carries this holder's token. Idempotent. */
  release(): Promise<void>;
}

function readOptional(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

function readLink(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

/** Whether /proc shows this process's pid namespace (a container may see its host's /proc): only then is /proc/<pid> process `pid`. */
const PROC_IS_OURS = readLink('/proc/self') === String(process.pid);

/** The start time of `pid` as the kernel reports it, or null if unknown. */
function processStart(pid: number | 'self'): string | null {
  if (pid !== 'self' && !PROC_IS_OURS) return null;
  const stat = readOptional(`/proc/${pid}/stat`);
  if (stat === null) return null;
  // comm (field 2) may contain spaces and parentheses: count fields after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null; // field 22 overall
}

const BOOT = readOptional('/proc/sys/kernel/random/boot_id');
const PIDNS = readLink('/proc/self/ns/pid');
const HOST = hostname();

function newOwner(): LockOwner {
  return { pid: process.pid, start: processStart('self'), host: HOST, boot: BOOT, pidns: PIDNS, token: randomBytes(16).toString('hex') };
}

function parseOwner(text: string): LockOwner | undefined {
  try {
    const o = JSON.parse(text) as Partial<LockOwner>;
    if (typeof o.pid !== 'number' || typeof o.host !== 'string' || typeof o.token !== 'string') return undefined;
    const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
    return { pid: o.pid, start: str(o.start), host: o.host, boot: str(o.boot), pidns: str(o.pidns), token: o.token };
  } catch {
    return undefined;
  }
}

/**
 * Whether `owner.pid` names the holder here: same kernel (boot id) and same
 * pid namespace. Where Linux /proc is missing (no pid namespaces to tell
 * apart), the hostname has to do, as it did before namespaces were recorded.
 */
function checkableByPid(owner: LockOwner): boolean {
  if (process.platform === 'linux') return BOOT !== null && PIDNS !== null && owner.boot === BOOT && owner.pidns === PIDNS;
  return owner.host === HOST && owner.boot === BOOT && owner.pidns === PIDNS;
}

/** True when the process that wrote `owner` (checkable by pid) has certainly exited. */
function isDeadLocal(owner: LockOwner): boolean {
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
 * Whether a lock found on disk is abandoned. A holder that cannot be checked
 * by pid is judged by its heartbeat (the file's mtime); so is a lock that does
 * not parse (keygate writes it whole, atomically: something else wrote it).
 */
function isAbandoned(found: Found, foreignStaleMs: number): boolean {
  const { owner } = found;
  if (owner && checkableByPid(owner)) return isDeadLocal(owner);
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
    const same = now && (dead.owner ? now.owner?.token === dead.owner.token : !now.owner && now.mtimeMs === dead.mtimeMs);
    // Judged again: a foreign holder may have refreshed its heartbeat since it was read.
    if (same && isAbandoned(now, options.foreignStaleMs ?? Infinity)) {
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

/** Default heartbeat period: far below any stale bound, so a holder delayed by load is not judged gone. */
export const DEFAULT_HEARTBEAT_MS = 2_000;

/** Polls with a short, growing delay; no busy loop. */
const pause = (attempt: number): Promise<void> => new Promise((r) => setTimeout(r, Math.min(10 + attempt * 5, 100)));

/**
 * Takes the lock file at `path`, waiting up to `waitMs` for a live holder.
 *
 * @throws LockBusyError when a live holder keeps it past `waitMs`
 */
export async function acquireLock(path: string, options: LockOptions = {}): Promise<HeldLock> {
  const heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  if (!(heartbeatMs > 0 && heartbeatMs <= 2_147_483_647)) throw new RangeError(`heartbeatMs must be a positive number of milliseconds, got ${heartbeatMs}`);
  const deadline = Date.now() + (options.waitMs ?? 10_000);
  const owner = newOwner();
  for (let attempt = 0; ; attempt++) {
    if (await createFileExclusive(path, JSON.stringify(owner))) return hold(path, owner, heartbeatMs, options.onCompromised);
    const found = await readLock(path);
    if (found === null) continue; // released between our create and read: compete again at once
    if (isAbandoned(found, options.foreignStaleMs ?? Infinity)) {
      if (!(await breakLock(path, found, options))) await pause(attempt);
      continue;
    }
    if (Date.now() >= deadline) throw new LockBusyError(path, found.owner, !(found.owner && checkableByPid(found.owner)));
    await pause(attempt);
  }
}

/**
 * The held lock: a heartbeat refreshes the file's mtime while the file still
 * carries `owner`'s token, and reports (once) when it no longer does.
 */
function hold(path: string, owner: LockOwner, heartbeatMs: number, onCompromised: ((reason: string) => void) | undefined): HeldLock {
  let released = false;
  let compromised = false;
  let beating: Promise<void> | undefined;
  const beat = async (): Promise<void> => {
    const found = await readLock(path).catch(() => undefined); // unreadable for now: try again next beat
    if (released || compromised || found === undefined) return;
    if (found === null || found.owner?.token !== owner.token) {
      compromised = true;
      clearInterval(timer);
      const reason = found === null ? `${path} is gone` : `${path} now belongs to another holder (${found.owner ? describeOwner(found.owner) : 'unparseable'})`;
      try {
        onCompromised?.(reason);
      } catch {
        // the callback's own failure must not become an unhandled rejection of the timer
      }
      return;
    }
    const now = new Date();
    await utimes(path, now, now).catch(() => {}); // removed meanwhile: the next beat finds out
  };
  const timer = setInterval(() => {
    beating ??= beat().finally(() => (beating = undefined));
  }, heartbeatMs);
  timer.unref(); // the lock never keeps a process alive on its own
  return {
    path,
    owner,
    get compromised() {
      return compromised;
    },
    release: async () => {
      if (released) return;
      released = true;
      clearInterval(timer);
      await beating; // no refresh after the removal below
      await removeIfOwned(path, owner.token);
    },
  };
}

/** The store lock stayed held by a live process for the whole wait. */
export class StoreLockedError extends CodedError<'STORE_LOCKED'> {
  override readonly name = 'StoreLockedError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('STORE_LOCKED', message, options);
  }
}

/**
 * Heartbeat age after which a store lock whose holder cannot be checked by pid
 * is taken as abandoned (store updates take milliseconds, and their holders
 * refresh the lock every DEFAULT_HEARTBEAT_MS while they run).
 */
export const STORE_LOCK_FOREIGN_STALE_MS = 30_000;

/**
 * Runs `fn` holding the lock file `<dir>/.lock`, so read-modify-write updates
 * from concurrent CLI runs and brokers do not lose each other's changes.
 */
export async function withLock<T>(dir: string, fn: () => Promise<T>): Promise<T> {
  const lock = await acquireLock(join(dir, '.lock'), { waitMs: 10_000, foreignStaleMs: STORE_LOCK_FOREIGN_STALE_MS }).catch((err: unknown) => {
    if (err instanceof LockBusyError) throw new StoreLockedError(`store is locked by another process (${err.message})`, { cause: err });
    throw err;
  });
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}
