/**
 * bench/cli: wall time of whole `keygate` processes (node start-up included), launched one after
 * another, interleaved with `node -e 0` so the machine's load hits every command alike: min and
 * median per command. Goal (issue 15): each command < 150 ms on a 2-core machine where node alone
 * takes ~70 ms.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeResults } from './harness.js';
import { realDocuments } from '../test/support/fixtures.js';

const LAUNCHES = Number(process.env.BENCH_CLI_LAUNCHES ?? 21);
const BIN = fileURLToPath(new URL('../bin/keygate.js', import.meta.url));
const FIXTURES = fileURLToPath(new URL('../../shared/fixtures/nitro/', import.meta.url));

function wallMs(argv: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} exited ${r.status}: ${r.stderr.toString()}`);
  return ms;
}

export async function benchCli(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-cli-'));
  try {
    const doc = realDocuments[0]!;
    const commands: Record<string, string[]> = {
      'node -e 0': ['-e', '0'],
      'keygate --help': [BIN, '--help'],
      'keygate verify FILE': [BIN, 'verify', join(FIXTURES, doc.file), '--at', String(doc.timestamp_ms)],
      'keygate list': [BIN, 'list', '--store', join(dir, 'store'), '--state', join(dir, 'state')],
    };
    wallMs(commands['keygate list']!); // creates the empty store once, outside the timing
    const times: Record<string, number[]> = Object.fromEntries(Object.keys(commands).map((k) => [k, []]));
    for (let i = 0; i < LAUNCHES; i++) for (const [name, argv] of Object.entries(commands)) times[name]!.push(wallMs(argv));
    const rows = Object.entries(times).map(([name, t]) => {
      const sorted = [...t].sort((a, b) => a - b);
      return { name, launches: t.length, minMs: sorted[0]!, medianMs: sorted[Math.floor(sorted.length / 2)]! };
    });
    console.log(`\nbench/cli (${LAUNCHES} launches each, interleaved; goal < 150 ms)`);
    for (const r of rows) console.log(`${r.name.padEnd(22)} min ${r.minMs.toFixed(0).padStart(5)} ms   median ${r.medianMs.toFixed(0).padStart(5)} ms`);
    const medianMs = Object.fromEntries(rows.map((r) => [r.name, r.medianMs]));
    const minMs = Object.fromEntries(rows.map((r) => [r.name, r.minMs]));
    console.log(`wrote ${writeResults('cli', { launches: LAUNCHES, medianMs, minMs, rows })}`);
    return { medianMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
