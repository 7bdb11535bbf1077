import { versionToReserve } from './reserved-version.js';
import { StoreProblems } from './problems.js';
import { constants, lstatSync, statSync, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { CodedError } from '../../lib/coded-error.js';
import { MAX_STORE_FILE_BYTES, readRegularFile, refusalOf, StoreFileRefused } from './regular-file.js';
import { SchemaError, SECRET_NAME, parseBinding, parseRevocations } from '../policy/schema.js';
import { NO_REVOCATIONS, type Binding, type Revocations } from '../policy/types.js';
import { parseBaseline, formatBaseline, type Baseline } from '../policy/baseline.js';
import { ensureDirectory, syncDirectory, writeFileAtomic } from '../../lib/durable-fs.js';
import { withLock } from './lock.js';
import type { BindingStore, StoreProblem, StoreSnapshot, StoreWrite, StoreWriter } from './store.js';

/** The interface types, re-exported while cli/context.ts and cli/commands/list.ts still import them from here. */

/** Stable, diff-friendly JSON. */
export function toJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

interface Loaded<T> {
  readonly fingerprint: string;
  /** Absent when the file failed validation. */
  readonly value: T | undefined;
  readonly problem?: StoreProblem;
}

const CHANGE_MARK = Buffer.from('.');

/** A file's identity for the cheap check, or undefined when it cannot be read (absent: '-' in the fingerprint). */
function lstatOrNone(path: string): BigIntStats | undefined {
  try {
    // An absent file (revocations.json before the first revocation) answers undefined without building an
    // ENOENT error and its stack: ~3 µs less per check (issue 15); any other failure still lands in the catch.
    return lstatSync(path, { bigint: true, throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

function fingerprintOf(info: { mtimeNs: bigint; ino: bigint; size: bigint }): string {
  return `${info.mtimeNs}:${info.ino}:${info.size}`;
}

/** A write the file store refuses before touching a file: a file larger than it would read back. */
export class FileStoreError extends CodedError<'STORE_TOO_LARGE'> {
  override readonly name = 'FileStoreError';
}

/** The version to reserve for a binding file that fails validation (see `versionToReserve`); never blocks on a FIFO. */
async function versionOfDamagedFile(path: string): Promise<number> {
  return versionToReserve((await readRegularFile(path).catch(() => undefined))?.text);
}

/**
 * A directory of JSON documents: `bindings/<secret>.json`,
 * `baselines/<name>.json` and `revocations.json`. Every write is atomic; every load is validated; a file
 * that fails validation is reported and fails closed (see `StoreProblem`): no last good copy is kept.
 */
export class FileStore implements BindingStore {
  readonly #dir: string;
  readonly #bindingsDir: string;
  readonly #baselinesDir: string;
  /** `bindings/.retired/<secret>.json`: the last version of an unbound secret (ignored by loads: dot-names are skipped). */
  readonly #retiredDir: string;
  readonly #revocationsFile: string;
  /**
   * `.changes`: one byte appended by every update. The cheap check stats the directories, but a rename
   * into a directory in the same timestamp tick as the last stat leaves its (mtime, inode, size)
   * unchanged where timestamps are coarse (Linux before 6.13 uses the jiffy); this file's size grows
   * with every update, whatever the clock's granularity.
   */
  readonly #changesFile: string;
  #fingerprint = '';
  #files = new Map<string, Loaded<Binding>>();
  #baselineFiles = new Map<string, Loaded<Baseline>>();
  #revocations: Loaded<Revocations> | undefined;
  readonly #problems: StoreProblems;
  #snapshot: StoreSnapshot = { bindings: new Map(), baselines: new Map(), revocations: NO_REVOCATIONS, invalidBindings: new Set(), revocationsProblem: undefined, generation: 0 };
  /** The check (and load) in flight; callers share it only until it begins (the next turn of the event loop). */
  #checking: { readonly promise: Promise<StoreSnapshot>; begun: boolean } | undefined;
  /** The check that follows the one in flight, shared by the callers that came after that one began. */
  #queued: Promise<StoreSnapshot> | undefined;
  #lastFullScan = 0;
  readonly #fullScanIntervalMs: number;

  private constructor(dir: string, onProblem: (problem: StoreProblem) => void, fullScanIntervalMs: number) {
    this.#dir = dir;
    this.#fullScanIntervalMs = fullScanIntervalMs;
    this.#bindingsDir = join(dir, 'bindings');
    this.#baselinesDir = join(dir, 'baselines');
    this.#retiredDir = join(this.#bindingsDir, '.retired');
    this.#revocationsFile = join(dir, 'revocations.json');
    this.#changesFile = join(dir, '.changes');
    this.#problems = new StoreProblems(onProblem);
  }

  /** Opens (creating if needed) the store in `dir` and loads it. */
  static async open(dir: string, options: { onProblem?: (problem: StoreProblem) => void; fullScanIntervalMs?: number } = {}): Promise<FileStore> {
    const store = new FileStore(dir, options.onProblem ?? (() => {}), options.fullScanIntervalMs ?? 2_000);
    await ensureDirectory(store.#bindingsDir);
    await ensureDirectory(store.#baselinesDir);
    await store.refresh();
    return store;
  }

  snapshot(): StoreSnapshot {
    return this.#snapshot;
  }

  problems(): readonly StoreProblem[] {
    return this.#problems.list();
  }

  /** Nothing to release: the file store holds no open files or connections between calls (its lock is held only inside `update`). */
  close(): void {}

  /**
   * Synchronous on purpose: four stats of a local directory cost ~7 µs of CPU this way against 60-90 µs
   * as four thread-pool round trips (measured), and this runs for nearly every release (issue 15).
   */
  #currentFingerprint(): string {
    const dirInfo = statSync(this.#bindingsDir, { bigint: true });
    const baselineInfo = statSync(this.#baselinesDir, { bigint: true });
    const revInfo = lstatOrNone(this.#revocationsFile);
    const changesInfo = lstatOrNone(this.#changesFile);
    return `${fingerprintOf(dirInfo)}|${fingerprintOf(baselineInfo)}|${revInfo ? fingerprintOf(revInfo) : '-'}|${changesInfo ? fingerprintOf(changesInfo) : '-'}`;
  }

  /**
   * The store as of this call: every write that returned before it (a `keygate revoke` included) is in the
   * snapshot. Callers share a check (a stat of the directories and the revocation list, and a load if they
   * changed) only if it begins after they called: a check already under way may have looked before a write
   * that returned before this call, so the caller waits for the next one instead, which every caller arriving
   * meanwhile shares. At most one check is in flight and one queued.
   */
  refresh(): Promise<StoreSnapshot> {
    const checking = this.#checking;
    if (!checking) return this.#startCheck(false);
    if (!checking.begun) return checking.promise;
    this.#queued ??= checking.promise
      .catch(() => undefined)
      .then(() => {
        this.#queued = undefined;
        return this.refresh();
      });
    return this.#queued;
  }

  /** Starts the one check in flight; `full` loads whatever the cheap check says (rescan). */
  #startCheck(full: boolean): Promise<StoreSnapshot> {
    const check: { promise: Promise<StoreSnapshot>; begun: boolean } = { promise: Promise.resolve(this.#snapshot), begun: full };
    check.promise = (async () => {
      // Until the check begins (next turn of the event loop), callers arriving meanwhile may share it.
      if (!full) await new Promise<void>((resolve) => setImmediate(resolve));
      check.begun = true;
      // Taken before the load: a change made during the load is seen by the next check.
      const fingerprint = this.#currentFingerprint();
      // keygate's own writes rename into the directory, which the cheap check sees at once;
      // a file edited in place is caught by the periodic full scan (it re-stats every file).
      if (!full && fingerprint === this.#fingerprint && Date.now() - this.#lastFullScan < this.#fullScanIntervalMs) return this.#snapshot;
      await this.#load();
      this.#fingerprint = fingerprint;
      return this.#snapshot;
    })().finally(() => {
      if (this.#checking === check) this.#checking = undefined;
    });
    this.#checking = check;
    return check.promise;
  }

  /** Re-reads every file whose stat changed, regardless of the directory check. */
  async rescan(): Promise<StoreSnapshot> {
    while (this.#checking) await this.#checking.promise;
    return this.#startCheck(true);
  }

  async #loadFile<T>(path: string, previous: Loaded<T> | undefined, parse: (json: unknown) => T): Promise<Loaded<T> | undefined> {
    let info;
    try {
      // lstat: a symbolic link is judged as itself (refused below), never followed.
      info = await lstat(path, { bigint: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return { fingerprint: '', value: undefined, problem: this.#problems.report(path, String(err)) };
      this.#problems.clear(path); // removed on purpose: nothing to report any more
      return undefined;
    }
    const fingerprint = fingerprintOf(info);
    if (previous && previous.fingerprint === fingerprint) return previous;
    // Only a regular file within the size cap is opened: a FIFO or device would block or never end the read.
    const refusal = refusalOf(info);
    if (refusal) return { fingerprint, value: undefined, problem: this.#problems.report(path, refusal) };
    try {
      const read = await readRegularFile(path);
      if (read === undefined) {
        this.#problems.clear(path); // removed since the lstat: as if it was never there
        return undefined;
      }
      const value = parse(JSON.parse(read.text) as unknown);
      this.#problems.clear(path);
      return { fingerprint, value };
    } catch (err) {
      const message = err instanceof SchemaError || err instanceof StoreFileRefused ? err.message : err instanceof SyntaxError ? `invalid JSON: ${err.message}` : String(err);
      // Fail closed: the previous content is not kept; what this file governs becomes unavailable.
      return { fingerprint, value: undefined, problem: this.#problems.report(path, message) };
    }
  }

  /** Loads every `<name>.json` of `dir` with `parse`; failing files are kept without a value. */
  async #loadDirectory<T>(dir: string, previous: Map<string, Loaded<T>>, parse: (json: unknown, file: string, name: string) => T): Promise<Map<string, Loaded<T>>> {
    const names = (await readdir(dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
    const files = new Map<string, Loaded<T>>();
    for (const file of names) {
      const name = file.slice(0, -5);
      const loaded = await this.#loadFile(join(dir, file), previous.get(file), (json) => {
        if (!SECRET_NAME.test(name)) throw new SchemaError(file, 'file name is not a valid name');
        return parse(json, file, name);
      });
      if (loaded) files.set(file, loaded);
    }
    // Problems of files that no longer exist are forgotten.
    this.#problems.retain((path) => !path.startsWith(`${dir}/`) || names.includes(path.slice(dir.length + 1)));
    return files;
  }

  async #load(): Promise<void> {
    this.#lastFullScan = Date.now();
    this.#files = await this.#loadDirectory(this.#bindingsDir, this.#files, (json, file, name) => {
      const binding = parseBinding(json, file);
      if (binding.secret !== name) throw new SchemaError(`${file}.secret`, `must equal the file name ("${name}")`);
      return binding;
    });
    this.#baselineFiles = await this.#loadDirectory(this.#baselinesDir, this.#baselineFiles, (json, file, name) => {
      const baseline = parseBaseline(json, file);
      if (baseline.name !== name) throw new SchemaError(`${file}.name`, `must equal the file name ("${name}")`);
      return baseline;
    });
    this.#revocations = await this.#loadFile(this.#revocationsFile, this.#revocations, (json) => parseRevocations(json, 'revocations.json'));
    const bindings = new Map<string, Binding>();
    const invalidBindings = new Set<string>();
    for (const [file, { value }] of this.#files) {
      if (value) bindings.set(value.secret, value);
      else invalidBindings.add(file.slice(0, -5));
    }
    // A baseline that fails validation is simply absent: rules that reference it do not count.
    const baselines = new Map<string, Baseline>();
    for (const { value } of this.#baselineFiles.values()) if (value) baselines.set(value.name, value);
    const revocationsProblem = this.#revocations?.problem;
    const revocations = this.#revocations?.value ?? NO_REVOCATIONS;
    const same = <V>(a: ReadonlyMap<string, V>, b: ReadonlyMap<string, V>): boolean => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
    const sameSet = (a: ReadonlySet<string>, b: ReadonlySet<string>): boolean => a.size === b.size && [...a].every((k) => b.has(k));
    const unchanged =
      same(bindings, this.#snapshot.bindings) &&
      same(baselines, this.#snapshot.baselines) &&
      revocations === this.#snapshot.revocations &&
      sameSet(invalidBindings, this.#snapshot.invalidBindings) &&
      revocationsProblem === this.#snapshot.revocationsProblem;
    if (!unchanged) this.#snapshot = { bindings, baselines, revocations, invalidBindings, revocationsProblem, generation: this.#snapshot.generation + 1 };
  }

  /** Highest version an unbound `secret` had (0: none). A damaged record refuses the write rather than reuse versions. */
  async #retiredVersion(secret: string): Promise<number> {
    const path = join(this.#retiredDir, `${secret}.json`);
    let text: string;
    try {
      const read = await readRegularFile(path);
      if (read === undefined) return 0;
      text = read.text;
    } catch (err) {
      if (err instanceof StoreFileRefused) throw new SchemaError(path, `retired-version record is ${err.message}; fix or remove it (versions must never repeat)`);
      throw err;
    }
    try {
      const json = JSON.parse(text) as { secret?: unknown; version?: unknown };
      if (json.secret === secret && typeof json.version === 'number' && Number.isSafeInteger(json.version) && json.version >= 1) return json.version;
    } catch {
      // reported below
    }
    throw new SchemaError(path, 'retired-version record is damaged; fix or remove it (versions must never repeat)');
  }

  /** The file one write replaces and its content, validated and within the size cap (else STORE_TOO_LARGE). */
  #fileOf(write: StoreWrite): { path: string; text: string } {
    let file: { path: string; text: string };
    switch (write.kind) {
      case 'binding': {
        const valid = parseBinding(write.binding);
        file = { path: join(this.#bindingsDir, `${valid.secret}.json`), text: toJson(valid) };
        break;
      }
      case 'baseline': {
        const valid = parseBaseline(write.baseline);
        file = { path: join(this.#baselinesDir, `${valid.name}.json`), text: formatBaseline(valid) };
        break;
      }
      case 'revocations':
        file = { path: this.#revocationsFile, text: toJson(parseRevocations(write.revocations)) };
        break;
      case 'reserved-version':
        file = { path: join(this.#retiredDir, `${write.name}.json`), text: toJson({ secret: write.name, version: write.version }) };
        break;
    }
    const size = Buffer.byteLength(file.text);
    // Never write a file the store would refuse to read back.
    if (size > MAX_STORE_FILE_BYTES) throw new FileStoreError('STORE_TOO_LARGE', `${file.path} would be ${size} bytes; a store file holds at most ${MAX_STORE_FILE_BYTES}`);
    return file;
  }

  /** Appends one byte to `.changes` (durably, before the update returns): every reader's next check sees a new size. */
  async #noteChange(): Promise<void> {
    // Never follow a planted symlink, never wait for a reader of a planted FIFO (ENXIO instead).
    const file = await open(this.#changesFile, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK, 0o644);
    try {
      await file.write(CHANGE_MARK);
      await file.datasync();
    } finally {
      await file.close();
    }
  }

  async #write(write: StoreWrite): Promise<void> {
    const { path, text } = this.#fileOf(write);
    await writeFileAtomic(path, text);
  }

  checkUpdate(writes: readonly StoreWrite[]): void {
    for (const write of writes) this.#fileOf(write);
  }

  async update<T>(fn: (current: StoreSnapshot, tx: StoreWriter) => Promise<T>): Promise<T> {
    return withLock(this.#dir, async () => {
      await this.#load();
      const writer: StoreWriter = {
        putBinding: async (binding) => this.#write({ kind: 'binding', binding }),
        deleteBinding: async (secret) => {
          if (!SECRET_NAME.test(secret)) return false;
          const path = join(this.#bindingsDir, `${secret}.json`);
          const existed = await lstat(path).then(
            () => true,
            () => false,
          );
          // Reserve the version before the binding goes: a crash in between leaves both, which is safe.
          const version = existed ? (this.#snapshot.bindings.get(secret)?.version ?? (await versionOfDamagedFile(path))) : undefined;
          if (version !== undefined && version > (await this.#retiredVersion(secret))) {
            await ensureDirectory(this.#retiredDir);
            await writeFileAtomic(join(this.#retiredDir, `${secret}.json`), toJson({ secret, version }));
          }
          await rm(path, { force: true });
          await syncDirectory(this.#bindingsDir);
          return existed;
        },
        nextVersion: async (secret) => Math.max(this.#snapshot.bindings.get(secret)?.version ?? 0, await this.#retiredVersion(secret)) + 1,
        putRevocations: async (revocations) => this.#write({ kind: 'revocations', revocations }),
        putBaseline: async (baseline) => this.#write({ kind: 'baseline', baseline }),
        reservedVersions: async () => {
          const names = await readdir(this.#retiredDir).catch((err: NodeJS.ErrnoException) => {
            if (err.code === 'ENOENT') return [] as string[];
            throw err;
          });
          const reserved = new Map<string, number>();
          for (const file of names.filter((n) => n.endsWith('.json') && !n.startsWith('.')).sort()) {
            const secret = file.slice(0, -5);
            // A record keygate did not write under this name is damaged: refuse rather than skip it (versions must never repeat).
            if (!SECRET_NAME.test(secret)) throw new SchemaError(join(this.#retiredDir, file), 'retired-version record has an invalid name; fix or remove it');
            reserved.set(secret, await this.#retiredVersion(secret));
          }
          return reserved;
        },
        reserveVersion: async (secret, version) => {
          if (!SECRET_NAME.test(secret) || !Number.isSafeInteger(version) || version < 1) throw new SchemaError('reserved version', `invalid reservation ${secret}@${version}`);
          if (version <= (await this.#retiredVersion(secret))) return;
          await ensureDirectory(this.#retiredDir);
          await this.#write({ kind: 'reserved-version', name: secret, version });
        },
      };
      const result = await fn(this.#snapshot, writer);
      await this.#noteChange();
      this.#fingerprint = '';
      await this.refresh();
      return result;
    });
  }
}
