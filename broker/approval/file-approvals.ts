import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createFileExclusive, ensureDirectory, writeFileAtomic } from '../../lib/durable-fs.js';
import { readRegularFile } from '../store/regular-file.js';
import { withLock } from '../store/lock.js';
import type { ApprovalStore } from './approval-store.js';
import { APPROVAL_ID, ApprovalError, parseApprovalRequest, type ApprovalRequest } from './request.js';

const toJson = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`;

/**
 * Approval requests of a file store: `<store>/approvals/<id>.json`, each written atomically (create by
 * exclusive link, replace under the directory's own lock `<store>/approvals/.lock` after checking the
 * revision), so the broker and `keygate approvals` CLIs on the same machine never lose each other's writes.
 */
export class FileApprovalStore implements ApprovalStore {
  readonly #dir: string;

  constructor(storeDir: string) {
    this.#dir = join(storeDir, 'approvals');
  }

  #path(id: string): string {
    if (!APPROVAL_ID.test(id)) throw new ApprovalError('APPROVAL_NOT_FOUND', `"${id.slice(0, 80)}" is not an approval request id (apr_ and 32 hex digits)`);
    return join(this.#dir, `${id}.json`);
  }

  async #read(path: string): Promise<ApprovalRequest | undefined> {
    let file;
    try {
      file = await readRegularFile(path);
    } catch (err) {
      throw new ApprovalError('APPROVAL_STORE_INVALID', `approval file ${path} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    if (!file) return undefined;
    let json: unknown;
    try {
      json = JSON.parse(file.text);
    } catch {
      throw new ApprovalError('APPROVAL_STORE_INVALID', `approval file ${path} is not JSON`);
    }
    return parseApprovalRequest(json);
  }

  async list(): Promise<ApprovalRequest[]> {
    const names = await readdir(this.#dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    const out: ApprovalRequest[] = [];
    for (const name of names.filter((n) => n.endsWith('.json') && APPROVAL_ID.test(n.slice(0, -5)))) {
      const request = await this.#read(join(this.#dir, name)).catch(() => undefined);
      if (request) out.push(request);
    }
    return out.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  get(id: string): Promise<ApprovalRequest | undefined> {
    return this.#read(this.#path(id));
  }

  async create(request: ApprovalRequest): Promise<boolean> {
    await ensureDirectory(this.#dir);
    return createFileExclusive(this.#path(request.id), toJson(request));
  }

  async replace(next: ApprovalRequest): Promise<boolean> {
    const path = this.#path(next.id);
    return withLock(this.#dir, async () => {
      const current = await this.#read(path);
      if (!current || current.rev !== next.rev - 1) return false;
      await writeFileAtomic(path, toJson(next));
      return true;
    });
  }

  async remove(id: string): Promise<void> {
    await rm(this.#path(id), { force: true });
  }

  async check(): Promise<void> {}

  close(): void {}
}
