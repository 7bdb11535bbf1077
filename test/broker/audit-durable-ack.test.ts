/**
 * The audit log acknowledges a record (and so lets the broker answer) only once it is durable: written and
 * fdatasync'd (or written through a descriptor opened O_DSYNC, where each write returns only once on stable
 * storage, should the log ever open its file that way).
 * Ordering is checked on real files by watching every FileHandle write and datasync, and with gated handles
 * that hold the write or the datasync open while the append is watched.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { constants, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
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
  dir = mkdtempSync(join(tmpdir(), 'keygate-audit-ack-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const key = generateKeyPairSync('ed25519');
const signer = { key: key.privateKey, kid: 'test' };
const record = (nonce: string): DecisionRecord => ({
  time: new Date(0).toISOString(), decision: 'release', code: 'RELEASED', secret: 'db', version: 1, moduleId: 'i-0', pcrs: null, docSha256: null, nonce, client: '127.0.0.1', latencyMs: 1,
});
const hasProc = (() => {
  try {
    readdirSync('/proc/self/fdinfo');
    return true;
  } catch {
    return false;
  }
})();

/** The open-file flags of descriptor `fd` of this process (Linux /proc). */
const fdFlags = (fd: number): number => parseInt(/^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8);

/** This process's descriptor open on `file` (Linux /proc). */
function fdOf(file: string): number {
  const fd = readdirSync('/proc/self/fd').find((n) => {
    try {
      return readlinkSync(`/proc/self/fd/${n}`) === file;
    } catch {
      return false;
    }
  });
  expect(fd).toBeDefined();
  return Number(fd);
}

/** Lets `n` rounds of the event loop run (I/O callbacks, timers, immediates): what a wrongly early acknowledgement would need. */
async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

/** Every completed FileHandle write / datasync of this process, in completion order, with its descriptor. */
type Done = { op: 'write' | 'datasync'; fd: number };
// FileHandle's prototype is not exported: take it from a handle.
const probe = await open('/dev/null', 'r');
const proto = Object.getPrototypeOf(probe) as Record<'write' | 'datasync', (this: { fd: number }, ...a: unknown[]) => Promise<unknown>>;
await probe.close();
const original = { write: proto.write, datasync: proto.datasync };

describe.skipIf(!hasProc)('on real files (default opener)', () => {
  const done: Done[] = [];
  beforeAll(() => {
    for (const op of ['write', 'datasync'] as const) {
      proto[op] = async function (this: { fd: number }, ...args: unknown[]) {
        const result = await original[op].apply(this, args);
        done.push({ op, fd: this.fd });
        return result;
      };
    }
  });
  afterAll(() => Object.assign(proto, original));
  // Descriptor numbers are reused between tests.
  beforeEach(() => void (done.length = 0));

  it('acknowledges every append only once its bytes are durable: written O_DSYNC, or written then fdatasynced', async () => {
    const file = join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file, signer);
    const fd = fdOf(file);
    const dsync = (fdFlags(fd) & constants.O_DSYNC) === constants.O_DSYNC;
    const unsafe: string[] = [];
    const ack = (nonce: string): Promise<void> =>
      log.append(record(nonce)).then(() => {
        // At this moment the last completed operation on the audit descriptor must make everything before it durable.
        const ops = done.filter((d) => d.fd === fd);
        const lastWrite = ops.map((d) => d.op).lastIndexOf('write');
        const syncedAfter = ops.slice(lastWrite + 1).some((d) => d.op === 'datasync');
        if (lastWrite < 0 || !(dsync || syncedAfter)) unsafe.push(nonce);
      });
    await ack('one');
    await Promise.all(Array.from({ length: 32 }, (_, i) => ack(`c${i}`)));
    for (let i = 0; i < 5; i++) await ack(`s${i}`);
    await log.close();
    expect(unsafe).toEqual([]);
    expect(verifyAuditLog(readFileSync(file, 'utf8'), key.publicKey)).toMatchObject({ ok: true, decisions: 38 });
  });
});

/** A real file behind a handle whose write or datasync can be held open until released. */
function gated(hold: 'write' | 'datasync'): { openFile: (path: string) => Promise<AuditFileHandle>; entered: () => boolean; release: () => void; calls: string[] } {
  let entered = false;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const calls: string[] = [];
  return {
    entered: () => entered,
    release: () => release(),
    calls,
    openFile: async (path) => {
      const h = await open(path, 'a', 0o600);
      return {
        write: async (buf, offset, length) => {
          calls.push('write');
          const r = await h.write(buf, offset, length);
          if (hold === 'write') {
            entered = true;
            await gate;
          }
          return r;
        },
        datasync: async () => {
          calls.push('datasync');
          await h.datasync();
          if (hold === 'datasync') {
            entered = true;
            await gate;
          }
        },
        truncate: (len) => h.truncate(len),
        close: () => h.close(),
      };
    },
  };
}

describe('acknowledgement waits for durability (gated handles)', () => {
  it.each(['write', 'datasync'] as const)('an append is not acknowledged while its %s is still under way; fdatasync follows the write', async (hold) => {
    const g = gated(hold);
    // AuditLog.open writes nothing: the first write (and datasync) is the append's.
    const log = await AuditLog.open(join(dir, 'audit.jsonl'), signer, { openFile: g.openFile });
    let acked = false;
    const append = log.append(record('held')).then(() => void (acked = true));
    await until(`the ${hold} to start`, g.entered);
    await turns(20);
    expect(acked).toBe(false);
    g.release();
    await append;
    expect(acked).toBe(true);
    expect(g.calls).toEqual(['write', 'datasync']);
    await log.close();
  });
});
