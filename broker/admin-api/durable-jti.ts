import { appendFile, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ensureDirectory, syncDirectory, writeFileAtomic } from '../../lib/durable-fs.js';
import { NonceRegistryUnavailableError, type NonceRegistry, type NonceUse } from '../nonce/registry.js';

/**
 * Single use of admin-token jtis for a broker whose nonce registry lives in
 * its own memory: the memory registry forgets everything on restart, so a
 * token used before a restart would be accepted again within its lifetime
 * (found in review). Each jti this broker accepts is appended to a file under
 * stateDir and fsynced before the request goes on; at start the unexpired
 * ones are loaded back (and the file is rewritten with only those). Admin
 * requests are rare, so a write per request costs nothing that matters.
 * With a shared (DynamoDB) nonce registry this is not used: the table
 * already outlives restarts and is shared by replicas.
 */
export class DurableJtiRegistry implements NonceRegistry {
  readonly #file: string;
  readonly #inner: NonceRegistry;
  #writing: Promise<unknown> = Promise.resolve();

  private constructor(file: string, inner: NonceRegistry) {
    this.#file = file;
    this.#inner = inner;
  }

  /** Loads the unexpired jtis of `file` (missing: none) into `inner`, a fresh registry, and compacts the file. */
  static async open(file: string, inner: NonceRegistry, now: number): Promise<DurableJtiRegistry> {
    let text = '';
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const live: string[] = [];
    for (const line of text.split('\n')) {
      // A torn last line (a crash mid-append) was never acknowledged: skipped.
      const m = /^(\S{1,300}) (\d{1,16})$/.exec(line);
      if (!m || Number(m[2]) <= now) continue;
      if ((await inner.consume(m[1]!, Number(m[2]), now)) === 'fresh') live.push(line);
    }
    await ensureDirectory(dirname(file));
    await writeFileAtomic(file, live.length ? `${live.join('\n')}\n` : '');
    await syncDirectory(dirname(file));
    return new DurableJtiRegistry(file, inner);
  }

  async consume(id: string, rememberUntil: number, now: number): Promise<NonceUse> {
    const use = await this.#inner.consume(id, rememberUntil, now);
    if (use !== 'fresh') return use;
    // Durable before the caller acts on the token; appends are serialised so lines never interleave.
    const write = this.#writing.then(async () => {
      await appendFile(this.#file, `${id} ${Math.ceil(rememberUntil)}\n`, { mode: 0o600 });
      const handle = await open(this.#file, 'r');
      try {
        await handle.datasync();
      } finally {
        await handle.close();
      }
    });
    this.#writing = write.catch(() => undefined);
    try {
      await write;
    } catch (err) {
      // Not durable: refuse (the jti stays used in memory, so a retry of this token is refused too).
      throw new NonceRegistryUnavailableError(`cannot record the admin token's jti in ${this.#file}`, { cause: err, registryError: (err as NodeJS.ErrnoException).code ?? 'Error' });
    }
    return 'fresh';
  }

  check(): Promise<void> {
    return this.#inner.check();
  }

  close(): void {
    this.#inner.close();
  }
}
