/**
 * One audit file, one broker: a second `keygate broker` on the same state
 * directory refuses to start (two writers would interleave one hash chain),
 * and a broker killed with SIGKILL does not block the next start.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from '../support/cli.js';

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
  const child = spawn(process.execPath, [BIN, 'broker', '--config', config], { stdio: ['ignore', 'pipe', 'pipe'] });
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
