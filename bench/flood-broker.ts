/**
 * Child process of bench/flood: a test broker (no rate limits) that prints its URL and, on each
 * IPC 'mem' message, collects garbage and answers its memory figures. Run with --expose-gc.
 */
import '../test/support/setup.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestBroker } from '../test/support/broker.js';

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc || !process.send) throw new Error('run by bench/flood with --expose-gc and an IPC channel');
const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-flood-'));
const broker = await startTestBroker(dir, []);
process.on('message', async (m: unknown) => {
  if (m === 'mem') {
    gc();
    gc();
    const u = process.memoryUsage();
    process.send!({ rss: u.rss, heapUsed: u.heapUsed, external: u.external, maxRssKb: process.resourceUsage().maxRSS });
  } else if (m === 'stop') {
    await broker.close();
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }
});
process.send({ url: broker.url });
