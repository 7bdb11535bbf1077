/**
 * When a rotation renames the live file and then fails to open the next one (EMFILE, ENOSPC on create), recovery
 * creates the live file again: the directory must be fsynced (the new entry, and the rename before it) before any
 * record written to that file is acknowledged, or a power loss can undo acknowledged records while the older chain
 * still verifies (found by the session's adversarial review; older than the session).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { until } from '../support/poll.js';

const events: string[] = [];
vi.mock('../../lib/durable-fs.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../lib/durable-fs.js')>();
  return {
    ...orig,
    syncDirectory: async (d: string) => {
      await orig.syncDirectory(d);
      events.push(`syncDirectory ${d}`);
    },
  };
});
const { AuditLog } = await import('../../broker/audit/log.js');
type AuditFileHandle = import('../../broker/audit/log.js').AuditFileHandle;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-review-rotdir-'));
  events.length = 0;
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const key = generateKeyPairSync('ed25519');
const signer = { key: key.privateKey, kid: 'test' };
const record = (nonce: string) => ({ time: new Date(0).toISOString(), decision: 'release' as const, code: 'RELEASED', secret: 'db', version: 1, moduleId: 'i-0', pcrs: null, docSha256: null, nonce, client: '127.0.0.1', latencyMs: 1 });

describe('audit recovery after a failed rotation', () => {
  it('fsyncs the directory (the rename and the new live file) before acknowledging anything written to the new file', async () => {
    const file = join(dir, 'audit.jsonl');
    let opens = 0;
    const openFile = async (path: string): Promise<AuditFileHandle> => {
      opens++;
      if (opens === 2) throw Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' }); // the rotation's open
      const h = await open(path, 'a', 0o600);
      events.push(`open ${opens}`);
      return h;
    };
    const log = await AuditLog.open(file, signer, { openFile, maxFileBytes: 1200, retryMs: 20 });
    await log.append(record('a'.repeat(600)));
    expect(statSync(file).size).toBeGreaterThan(800); // most of maxFileBytes: the next batch rotates
    await expect(log.append(record('b'.repeat(64)))).rejects.toMatchObject({ name: 'AuditUnavailableError' });
    expect(readdirSync(dir)).toContain('audit.000001.jsonl'); // renamed before the failed open
    await until('recovery', () => log.healthy);
    events.push('recovered');
    expect(statSync(file).size).toBeLessThan(600); // the recovery's seal: the next small batch does not rotate
    await log.append(record('c'.repeat(8)));
    events.push('acknowledged');
    await log.close();
    expect(readdirSync(dir).sort()).toEqual(['audit.000001.jsonl', 'audit.jsonl']);
    // Somewhere between the recovery's open (which created audit.jsonl) and this acknowledgement, the directory
    // must have been fsynced. It never is: fails with events = ['open 3', 'recovered', 'acknowledged'].
    const created = events.indexOf('open 3'); // the recovery's open, which created audit.jsonl
    const acked = events.indexOf('acknowledged');
    expect(created).toBeGreaterThan(-1);
    expect({ events, synced: events.slice(created, acked).includes(`syncDirectory ${dir}`) }).toMatchObject({ synced: true });
  });
});
