/**
 * Audit durability under failing writes: a short write, ENOSPC/EFBIG or a
 * failed datasync acknowledges nothing, is logged once, and the log recovers
 * by itself (torn tail cut, chain continued from the last durable record).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, type AuditFileHandle } from '../../broker/audit/log.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { until } from '../support/poll.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-audit-fault-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const key = generateKeyPairSync('ed25519');
const signer = { key: key.privateKey, kid: 'test' };
const record = (nonce: string): DecisionRecord => ({
  time: new Date(0).toISOString(), decision: 'release', code: 'RELEASED', secret: 'db', version: 1, moduleId: 'i-0', pcrs: null, docSha256: null, nonce, client: '127.0.0.1', latencyMs: 1,
});

type Fault = 'none' | 'short' | 'short-then-efbig' | 'enospc' | 'datasync-eio';

/** Real files, with a switchable fault in front of write/datasync. */
function faultyFiles(): { fault: { mode: Fault }; openFile: (path: string) => Promise<AuditFileHandle> } {
  const fault = { mode: 'none' as Fault };
  const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: injected`), { code });
  return {
    fault,
    openFile: async (path) => {
      const h = await open(path, 'a', 0o600);
      let shortDone = false;
      return {
        write: async (buf, offset, length) => {
          if (fault.mode === 'enospc') throw errno('ENOSPC');
          if (fault.mode === 'short' || fault.mode === 'short-then-efbig') {
            if (shortDone) {
              if (fault.mode === 'short-then-efbig') throw errno('EFBIG');
              return { bytesWritten: 0 };
            }
            shortDone = true;
            return h.write(buf, offset, Math.max(1, Math.floor(length / 2)));
          }
          return h.write(buf, offset, length);
        },
        datasync: async () => {
          if (fault.mode === 'datasync-eio') throw errno('EIO');
          await h.datasync();
        },
        truncate: (len) => h.truncate(len),
        close: () => h.close(),
      };
    },
  };
}

function loggedNonces(text: string): string[] {
  return text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; nonce?: string }).filter((r) => r.type === 'decision').map((r) => r.nonce!);
}

describe('audit log under write faults', () => {
  it.each<Fault>(['short', 'short-then-efbig', 'enospc', 'datasync-eio'])(
    '%s: fails the batch, acknowledges nothing, logs the cause once, then recovers without a restart',
    async (mode) => {
      const file = join(dir, 'audit.jsonl');
      const { fault, openFile } = faultyFiles();
      const logged: Array<{ level: string; message: string; fields?: Record<string, unknown> }> = [];
      const log = await AuditLog.open(file, signer, { openFile, log: (level, message, fields) => logged.push({ level, message, ...(fields ? { fields } : {}) }), retryMs: 20 });
      const acked: string[] = [];
      const ack = (n: string): Promise<void> => log.append(record(n)).then(() => void acked.push(n));
      await Promise.all(['a1', 'a2', 'a3'].map(ack));

      fault.mode = mode;
      const failed = await Promise.allSettled(['f1', 'f2', 'f3'].map(ack));
      expect(failed.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
      expect(log.healthy).toBe(false);
      // Fail fast while broken: nothing is acknowledged.
      await expect(log.append(record('f4'))).rejects.toThrow(/audit log/);
      const errors = logged.filter((l) => l.level === 'error');
      expect(errors).toHaveLength(1);
      expect(JSON.stringify(errors[0])).toMatch(mode === 'datasync-eio' ? /EIO/ : mode === 'enospc' ? /ENOSPC/ : mode === 'short-then-efbig' ? /EFBIG/ : /short write/);

      fault.mode = 'none';
      await until('recovery', () => log.healthy);
      await Promise.all(['b1', 'b2'].map(ack));
      await log.close();

      const text = readFileSync(file, 'utf8');
      const check = verifyAuditLog(text, key.publicKey);
      expect(check.problem).toBeUndefined();
      expect(check.ok).toBe(true);
      expect(loggedNonces(text)).toEqual(acked);
      expect(acked).toEqual(['a1', 'a2', 'a3', 'b1', 'b2']);
      expect(logged.filter((l) => l.level === 'info' && /recovered/.test(l.message))).toHaveLength(1);
    },
  );

  it('reopening cuts complete but unsealed records of a batch that never finished', async () => {
    const file = join(dir, 'audit.jsonl');
    const { fault, openFile } = faultyFiles();
    const log = await AuditLog.open(file, signer, { openFile, retryMs: 60_000 });
    await log.append(record('a1'));
    fault.mode = 'short';
    // A batch of many records: half of it (several complete decision lines, no seal) reaches the file.
    await Promise.allSettled(Array.from({ length: 8 }, (_, i) => log.append(record(`f${i}`))));
    await log.close();
    const torn = readFileSync(file, 'utf8');
    expect(torn.endsWith('\n')).toBe(false);
    expect(torn.split('\n').filter((l) => l.endsWith('}') && l.includes('"type":"decision"')).length).toBeGreaterThan(1); // complete lines of the failed batch
    await (await AuditLog.open(file, signer)).close();
    const text = readFileSync(file, 'utf8');
    expect(loggedNonces(text)).toEqual(['a1']);
    expect(verifyAuditLog(text, key.publicKey).ok).toBe(true);
  });
});
