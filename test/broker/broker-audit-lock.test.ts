/**
 * One audit file, one broker: a second `keygate broker` on the same state
 * directory refuses to start (two writers would interleave one hash chain),
 * and a broker killed with SIGKILL does not block the next start.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN } from '../support/cli.js';
import { startContained, UNSHARE_UNAVAILABLE } from '../support/pidns.js';
import { AuditFileInUseError, createBroker } from '../../broker/broker.js';
import { resolveConfig, type BrokerConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';

const CHILD_BROKER = fileURLToPath(new URL('../support/audit-lock-broker.ts', import.meta.url));
/** The same store and state as the `keygate.json` written below, for brokers made in this process. */
const inProcessConfig = (): BrokerConfig => resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state') });

let dir: string;
let config: string;
const children: ChildProcess[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-audit-lock-'));
  config = join(dir, 'keygate.json');
  writeFileSync(config, JSON.stringify({ store: 'store', stateDir: 'state', listen: '127.0.0.1:0' }));
});
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface Started {
  readonly child: ChildProcess;
  /** Resolves with the URL once listening, or with the exit status and output if it exits first. */
  readonly outcome: Promise<{ url: string } | { status: number | null; output: string }>;
}

function startBrokerProcess(): Started {
  const child = spawn(process.execPath, [BIN, 'broker', '--config', config, '--workers', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  const outcome = new Promise<{ url: string } | { status: number | null; output: string }>((resolve) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve({ url: m[1]! });
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (status) => resolve({ status, output: out }));
  });
  return { child, outcome };
}

async function listening(s: Started): Promise<string> {
  const o = await s.outcome;
  if (!('url' in o)) throw new Error(`broker exited ${o.status}: ${o.output}`);
  return o.url;
}

describe('one broker per audit file', () => {
  it('a second broker on the same audit file refuses to start; after SIGKILL of the first, the next start succeeds', { timeout: 120_000 }, async () => {
    const first = startBrokerProcess();
    const url = await listening(first);

    const second = await startBrokerProcess().outcome;
    expect(second).toMatchObject({ status: 1 });
    expect('output' in second && second.output).toMatch(/refusing to start: another keygate broker \(pid \d+ on .+\) is using the audit file .*audit\.jsonl/);
    expect((await fetch(`${url}/healthz`)).status).toBe(200); // the first one is untouched

    const exited = new Promise((r) => first.child.once('exit', r));
    first.child.kill('SIGKILL');
    await exited;
    const third = startBrokerProcess();
    const url3 = await listening(third); // the dead broker's lock is taken over at once
    expect((await fetch(`${url3}/healthz`)).status).toBe(200);
  });
});

describe('one broker per audit file across pid namespaces and hostnames', () => {
  const skipped = UNSHARE_UNAVAILABLE ? ` [SKIPPED: ${UNSHARE_UNAVAILABLE}]` : '';

  it.skipIf(UNSHARE_UNAVAILABLE !== null)(
    `a live broker in another pid namespace of this host keeps its audit file: a second broker refuses to start${skipped}`,
    { timeout: 90_000 },
    async () => {
      const first = await startContained(CHILD_BROKER, [dir, '100'], /listening/, children);
      const lock = join(dir, 'state', 'audit.jsonl.lock');
      const held = readFileSync(lock, 'utf8');
      // Its pid (1 in its namespace) means another process here: only its heartbeat says it is alive.
      const err: unknown = await createBroker(inProcessConfig(), { log: silentLogger, auditLock: { staleMs: 1_500 } }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AuditFileInUseError);
      expect((err as Error).message).toMatch(/another keygate broker \(pid 1 on .+\) is using the audit file/);
      expect(readFileSync(lock, 'utf8')).toBe(held);
      await first.kill9();
    },
  );

  it.skipIf(UNSHARE_UNAVAILABLE !== null)(
    `a broker SIGKILLed in a container whose hostname changes on restart does not block the restart: taken over within the stale bound${skipped}`,
    { timeout: 90_000 },
    async () => {
      const old = await startContained(CHILD_BROKER, [dir, '100'], /listening/, children, 'old-pod-abc');
      const lock = join(dir, 'state', 'audit.jsonl.lock');
      expect(JSON.parse(readFileSync(lock, 'utf8')).host).toBe('old-pod-abc');
      await old.kill9();
      const started = Date.now();
      const broker = await createBroker(inProcessConfig(), { log: silentLogger, auditLock: { staleMs: 1_500 } });
      try {
        expect(Date.now() - started).toBeLessThan(30_000);
        expect(JSON.parse(readFileSync(lock, 'utf8')).pid).toBe(process.pid);
        expect((await broker.app.request('/readyz')).status).toBe(200);
      } finally {
        await broker.close();
      }
    },
  );

  it('a broker whose audit lock was taken over stops: /readyz 503, the audit log refuses records, nothing more is written', { timeout: 60_000 }, async () => {
    const broker = await createBroker(inProcessConfig(), { log: silentLogger, auditLock: { heartbeatMs: 50 } });
    try {
      expect((await broker.app.request('/readyz')).status).toBe(200);
      const lock = join(dir, 'state', 'audit.jsonl.lock');
      const record = { time: new Date().toISOString(), decision: 'release', code: 'RELEASED', secret: 's', version: 1, moduleId: null, pcrs: null, docSha256: null, nonce: null, client: 'test', latencyMs: 0 } as const;
      // Junk beyond the per-client budget is only counted: a summary record is pending when the lock is lost.
      await Promise.all(Array.from({ length: 30 }, () => broker.audit.appendRefusal({ ...record, decision: 'deny', code: 'BAD_SIGNATURE', secret: null })));
      const size = statSync(join(dir, 'state', 'audit.jsonl')).size;
      // What a broker that judged this one gone (a paused VM, clock trouble) leaves: its own lock.
      const other = JSON.stringify({ pid: 1, start: null, host: 'other-pod', boot: null, pidns: null, token: '7'.repeat(32) });
      writeFileSync(lock, other);
      const deadline = Date.now() + 30_000;
      while (broker.audit.healthy && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(broker.audit.healthy).toBe(false);
      const ready = await broker.app.request('/readyz');
      expect(ready.status).toBe(503);
      // The file may be another broker's now: not one more byte, not even the pending summary.
      expect(statSync(join(dir, 'state', 'audit.jsonl')).size).toBe(size);
      await expect(broker.audit.append(record)).rejects.toMatchObject({ name: 'AuditUnavailableError' });
      await broker.close();
      expect(statSync(join(dir, 'state', 'audit.jsonl')).size).toBe(size);
      expect(readFileSync(lock, 'utf8')).toBe(other); // the new holder's lock is left alone
    } finally {
      await broker.close();
    }
  });
});


describe('a start that fails part-way', () => {
  it('closes what it had opened: the audit lock is released, so the next start on the same state succeeds', async () => {
    const bad = { ...inProcessConfig(), adminKeys: [join(dir, 'no-such-admin-key.pem')] };
    await expect(createBroker(bad, { log: silentLogger })).rejects.toThrow(/no-such-admin-key/);
    const broker = await createBroker(inProcessConfig(), { log: silentLogger });
    await broker.close();
  });
});
