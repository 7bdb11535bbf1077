import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureDirectory, writeFileAtomic } from '../../lib/durable-fs.js';
import { acquireLock, LockBusyError, STORE_LOCK_FOREIGN_STALE_MS } from '../store/lock.js';
import { DELEGATION_ID, DelegationRegistryUnavailableError, parseDelegationRecord, useOutcome, type DelegationRecord, type DelegationRegistry, type UseOutcome } from './registry.js';

/**
 * Delegations of a file store: one JSON file per delegation in `<store>/delegations/`, each change a
 * read-modify-write under the directory's lock file (so the broker counting uses and `keygate revoke
 * --delegation` in another process never lose each other's change), written atomically. One broker per
 * file store, so this is its single writer; the lock covers the CLI.
 */
/** Every this many creates, records a day past their expiry are removed (the directory stays bounded). */
const PRUNE_EVERY = 128;
const KEEP_EXPIRED_SECONDS = 86_400;

export class FileDelegationRegistry implements DelegationRegistry {
  readonly #dir: string;
  #creates = 0;
  /** Serialises this process's changes (the lock file serialises processes). */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(dir: string) {
    this.#dir = dir;
  }

  #path(id: string): string {
    if (!DELEGATION_ID.test(id)) throw new DelegationRegistryUnavailableError('not a delegation id');
    return join(this.#dir, `${id}.json`);
  }

  async #read(id: string): Promise<DelegationRecord | undefined> {
    let text: string;
    try {
      text = await readFile(this.#path(id), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new DelegationRegistryUnavailableError(`cannot read delegation ${id}`, { cause: err });
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const record = parseDelegationRecord(parsed);
    // A damaged record is not believed: fail closed (nothing is released under it).
    if (!record || record.id !== id) throw new DelegationRegistryUnavailableError(`delegation record ${id} fails validation`);
    return record;
  }

  /** Runs `fn` holding this process's turn and the directory's lock file. */
  #locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#tail.then(async () => {
      await ensureDirectory(this.#dir);
      const lock = await acquireLock(join(this.#dir, '.lock'), { waitMs: 10_000, foreignStaleMs: STORE_LOCK_FOREIGN_STALE_MS }).catch((err: unknown) => {
        throw new DelegationRegistryUnavailableError(err instanceof LockBusyError ? 'the delegations directory is locked by another process' : 'cannot lock the delegations directory', { cause: err });
      });
      try {
        return await fn();
      } finally {
        await lock.release();
      }
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #write(record: DelegationRecord): Promise<void> {
    try {
      await writeFileAtomic(this.#path(record.id), `${JSON.stringify(record, null, 2)}\n`);
    } catch (err) {
      throw new DelegationRegistryUnavailableError(`cannot write delegation ${record.id}`, { cause: err });
    }
  }

  create(record: DelegationRecord): Promise<void> {
    return this.#locked(async () => {
      if (await this.#read(record.id)) throw new DelegationRegistryUnavailableError(`delegation ${record.id} exists already`);
      await this.#write(record);
      if (++this.#creates % PRUNE_EVERY === 0) {
        try {
          await this.#prune(record.iat);
        } catch {
          // Housekeeping only: the delegation is recorded; the next prune tries again.
        }
      }
    });
  }

  /**
   * Removes records expired for more than a day (like the DynamoDB items' TTL). Harmless to a token:
   * an expired one is refused before its record is read, and a missing record is refused too.
   */
  async #prune(nowSeconds: number): Promise<void> {
    const { records } = await this.list();
    for (const r of records) if (r.exp + KEEP_EXPIRED_SECONDS < nowSeconds) await rm(this.#path(r.id), { force: true });
  }

  use(id: string, count: number, nowSeconds: number): Promise<UseOutcome> {
    return this.#locked(async () => {
      const record = await this.#read(id);
      const outcome = useOutcome(record, count, nowSeconds);
      if (outcome === 'ok') await this.#write({ ...record!, uses: record!.uses + count });
      return outcome;
    });
  }

  async get(ids: readonly string[]): Promise<ReadonlyMap<string, DelegationRecord>> {
    const out = new Map<string, DelegationRecord>();
    for (const id of ids) {
      const record = await this.#read(id);
      if (record) out.set(id, record);
    }
    return out;
  }

  async list(): Promise<{ records: DelegationRecord[]; invalid: string[] }> {
    let files: string[];
    try {
      files = await readdir(this.#dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { records: [], invalid: [] };
      throw new DelegationRegistryUnavailableError('cannot list delegations', { cause: err });
    }
    const records: DelegationRecord[] = [];
    const invalid: string[] = [];
    for (const file of files.filter((f) => f.endsWith('.json') && !f.startsWith('.'))) {
      const id = file.slice(0, -5);
      const record = DELEGATION_ID.test(id) ? await this.#read(id).catch(() => undefined) : undefined;
      if (record) records.push(record);
      else invalid.push(id);
    }
    return { records, invalid };
  }

  revoke(id: string): Promise<boolean> {
    return this.#locked(async () => {
      const record = await this.#read(id);
      if (!record) return false;
      if (!record.revoked) await this.#write({ ...record, revoked: true });
      return true;
    });
  }

  close(): void {}
}
