/**
 * `keygate broker --workers N`: a worker that dies is restarted, but only so often: a crash loop stops
 * the whole broker (exit 1, every worker gone) instead of serving from a flapping set.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestPki } from '../support/pki.js';
import { prepareBrokerDir, spawnBroker } from '../support/broker-process.js';
import { alive, workerPids } from '../support/workers.js';
import { until } from '../support/poll.js';




let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe('keygate broker --workers 2: restarts', () => {
  it('restarts a killed worker at most 5 times a minute; the sixth death stops the broker with exit 1 and no worker left', async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-workers-restart-'));
    const config = await prepareBrokerDir(dir, await createTestPki(Date.now()));
    const { child, stderr } = await spawnBroker(config, [], ['--workers', '2']);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    try {
      await until('both workers listening', () => workerPids(stderr()).length >= 2);
      for (let k = 1; k <= 5; k++) {
        const latest = workerPids(stderr()).at(-1)!;
        process.kill(latest.pid, 'SIGKILL');
        await until(`restart ${k}`, () => workerPids(stderr()).length >= 2 + k);
      }
      const pids = workerPids(stderr()).map((w) => w.pid);
      process.kill(pids.at(-1)!, 'SIGKILL');
      expect(await exited).toBe(1);
      expect(stderr()).toContain('broker workers keep dying: stopping the broker');
      for (const pid of pids) expect(alive(pid), `worker ${pid}`).toBe(false);
    } finally {
      child.kill('SIGKILL');
    }
  }, 240_000);
});
