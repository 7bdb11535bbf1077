import { versionToReserve } from './reserved-version.js';
import { StoreProblems } from './problems.js';
import { readdir, readFile, stat, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SchemaError, SECRET_NAME, parseBinding, parseRevocations } from '../policy/schema.js';
import { NO_REVOCATIONS, type Binding, type Revocations } from '../policy/types.js';
import { parseBaseline, formatBaseline, type Baseline } from '../policy/baseline.js';
import { ensureDirectory, syncDirectory, writeFileAtomic } from '../../lib/durable-fs.js';
import { withLock } from './lock.js';
import type { BindingStore, StoreProblem, StoreSnapshot, StoreWriter } from './store.js';

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

function fingerprintOf(info: { mtimeNs: bigint; ino: bigint; size: bigint }): string {
  return `${info.mtimeNs}:${info.ino}:${info.size}`;
}

/** The version to reserve for a binding file that fails validation (see `versionToReserve`). */
async function versionOfDamagedFile(path: string): Promise<number> {
  return versionToReserve(await readFile(path, 'utf8').catch(() => undefined));
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
  #fingerprint = '';
  #files = new Map<string, Loaded<Binding>>();
  #baselineFiles = new Map<string, Loaded<Baseline>>();
  #revocations: Loaded<Revocations> | undefined;
  readonly #problems: StoreProblems;
  #snapshot: StoreSnapshot = { bindings: new Map(), baselines: new Map(), revocations: NO_REVOCATIONS, invalidBindings: new Set(), revocationsProblem: undefined, generation: 0 };
  #refreshing: Promise<StoreSnapshot> | undefined;
  #lastFullScan = 0;
  readonly #fullScanIntervalMs: number;

  private constructor(dir: string, onProblem: (problem: StoreProblem) => void, fullScanIntervalMs: number) {
    this.#dir = dir;
    this.#fullScanIntervalMs = fullScanIntervalMs;
    this.#bindingsDir = join(dir, 'bindings');
    this.#baselinesDir = join(dir, 'baselines');
    this.#retiredDir = join(this.#bindingsDir, '.retired');
    this.#revocationsFile = join(dir, 'revocations.json');
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

  async #currentFingerprint(): Promise<string> {
    const dirInfo = await stat(this.#bindingsDir, { bigint: true });
    const baselineInfo = await stat(this.#baselinesDir, { bigint: true });
    const revInfo = await stat(this.#revocationsFile, { bigint: true }).catch(() => undefined);
    return `${fingerprintOf(dirInfo)}|${fingerprintOf(baselineInfo)}|${revInfo ? fingerprintOf(revInfo) : '-'}`;
  }

  refresh(): Promise<StoreSnapshot> {
    // Concurrent requests share one reload.
    this.#refreshing ??= this.#refreshNow().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }

  async #refreshNow(): Promise<StoreSnapshot> {
    const fingerprint = await this.#currentFingerprint();
    // keygate's own writes rename into the directory, which the cheap check sees at once;
    // a file edited in place is caught by the periodic full scan (it re-stats every file).
    if (fingerprint === this.#fingerprint && Date.now() - this.#lastFullScan < this.#fullScanIntervalMs) return this.#snapshot;
    await this.#load();
    this.#fingerprint = fingerprint;
    return this.#snapshot;
  }

  /** Re-reads every file whose stat changed, regardless of the directory check. */
  async rescan(): Promise<StoreSnapshot> {
    await this.#refreshing;
    await this.#load();
    this.#fingerprint = await this.#currentFingerprint();
    return this.#snapshot;
  }

  async #loadFile<T>(path: string, previous: Loaded<T> | undefined, parse: (json: unknown) => T): Promise<Loaded<T> | undefined> {
    let info;
    try {
      info = await stat(path, { bigint: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return { fingerprint: '', value: undefined, problem: this.#problems.report(path, String(err)) };
      this.#problems.clear(path); // removed on purpose: nothing to report any more
      return undefined;
    }
    const fingerprint = fingerprintOf(info);
    if (previous && previous.fingerprint === fingerprint) return previous;
    try {
      const value = parse(JSON.parse(await readFile(path, 'utf8')) as unknown);
      this.#problems.clear(path);
      return { fingerprint, value };
    } catch (err) {
      const message = err instanceof SchemaError ? err.message : err instanceof SyntaxError ? `invalid JSON: ${err.message}` : String(err);
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
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
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

  async update<T>(fn: (current: StoreSnapshot, tx: StoreWriter) => Promise<T>): Promise<T> {
    return withLock(this.#dir, async () => {
      await this.#load();
      const writer: StoreWriter = {
        putBinding: async (binding) => {
          const valid = parseBinding(binding);
          await writeFileAtomic(join(this.#bindingsDir, `${valid.secret}.json`), toJson(valid));
        },
        deleteBinding: async (secret) => {
          if (!SECRET_NAME.test(secret)) return false;
          const path = join(this.#bindingsDir, `${secret}.json`);
          const existed = await stat(path).then(
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
        putRevocations: async (revocations) => {
          await writeFileAtomic(this.#revocationsFile, toJson(parseRevocations(revocations)));
        },
        putBaseline: async (baseline) => {
          const valid = parseBaseline(baseline);
          await writeFileAtomic(join(this.#baselinesDir, `${valid.name}.json`), formatBaseline(valid));
        },
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
          await writeFileAtomic(join(this.#retiredDir, `${secret}.json`), toJson({ secret, version }));
        },
      };
      const result = await fn(this.#snapshot, writer);
      this.#fingerprint = '';
      await this.refresh();
      return result;
    });
  }
}
