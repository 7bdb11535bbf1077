/**
 * verifyThreads is checked against the thread pool where a broker runs (its UV_THREADPOOL_SIZE), never by the
 * admin commands that read the same config file from another shell: `keygate revoke --config broker.json` from an
 * operator's shell was refused because of a broker performance setting (found by the session's adversarial review).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../support/cli.js';
import { APPROVED } from '../support/enclave.js';

let dir: string;
const saved = process.env.UV_THREADPOOL_SIZE;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-review-vtcli-'));
  mkdirSync(join(dir, 'store'));
  mkdirSync(join(dir, 'state'));
  writeFileSync(join(dir, 'broker.json'), JSON.stringify({ store: 'store', stateDir: 'state', verifyThreads: 6 }));
});
afterEach(() => {
  if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
  else process.env.UV_THREADPOOL_SIZE = saved;
  rmSync(dir, { recursive: true, force: true });
});

describe('verifyThreads and the admin CLI', () => {
  it('the broker accepts the config under its own UV_THREADPOOL_SIZE, and keygate revoke/list with the same config work from a shell without it', async () => {
    const config = join(dir, 'broker.json');
    process.env.UV_THREADPOOL_SIZE = '8'; // the broker's environment (systemd Environment=)
    const check = await cli(['broker', '--config', config, '--check-config'], undefined, dir);
    expect(check.status, check.stderr).toBe(0);

    delete process.env.UV_THREADPOOL_SIZE; // the operator's shell
    const revoke = await cli(['revoke', '--pcr0', APPROVED[0], '--config', config], undefined, dir);
    expect([revoke.status, revoke.stderr.split('\n')[0]]).toEqual([0, '']);
    const list = await cli(['list', '--config', config], undefined, dir);
    expect([list.status, list.stderr.split('\n')[0]]).toEqual([0, '']);
    // The broker itself, started without the pool it needs, is refused, naming the size.
    const broker = await cli(['broker', '--config', config, '--check-config'], undefined, dir);
    expect(broker.status).toBe(2);
    expect(broker.stderr).toContain('verifyThreads 6 needs a thread pool of at least 7 threads (one kept for file I/O), but it has 4: start the broker with UV_THREADPOOL_SIZE=7');
  });
});
