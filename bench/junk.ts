/**
 * bench/junk: how much the audit log grows while one client sends junk
 * (random bytes as the attestation, 32 names per request) at full speed,
 * with the default per-client limit and with it off (every request reaches
 * verification). Must stay under 1 MB per 60 s.
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startTestBroker, NO_RATE_LIMITS } from '../test/support/broker.js';
import { DEFAULT_RATE_LIMITS } from '../broker/release.js';
import { auditFilesIn } from '../broker/audit/segments.js';
import { createTestPki } from '../test/support/pki.js';
import { printTable, writeResults, type Measurement } from './harness.js';

const SECONDS = Number(process.env.BENCH_JUNK_SECONDS ?? 60);
const CONCURRENCY = Number(process.env.BENCH_JUNK_CONCURRENCY ?? 16);
const LIMIT_BYTES = 1_000_000;

interface Run { seconds: number; requests: number; statuses: Record<string, number> }

function runJunk(url: string, bodies: string[]): Promise<Run> {
  const worker = new Worker(fileURLToPath(new URL('./junk-worker.mjs', import.meta.url)), { workerData: { url, bodies, concurrency: CONCURRENCY, seconds: SECONDS } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

async function auditBytes(stateDir: string): Promise<{ bytes: number; records: number }> {
  const files = await auditFilesIn(stateDir).catch(() => []);
  let bytes = 0;
  let records = 0;
  for (const f of files) {
    bytes += statSync(f).size;
    records += readFileSync(f, 'utf8').split('\n').filter((l) => l && !l.includes('"type":"seal"')).length;
  }
  return { bytes, records };
}

export async function benchJunk(): Promise<Record<string, unknown>> {
  const names = Array.from({ length: 32 }, (_, i) => `secret-${i}`);
  const bodies = Array.from({ length: 64 }, () => JSON.stringify({ attestation: randomBytes(4000).toString('base64'), names }));
  const pki = await createTestPki(Date.now());
  const rows: Measurement[] = [];
  const results: Record<string, unknown>[] = [];
  for (const [label, rateLimits] of [
    ['default per-client limit', DEFAULT_RATE_LIMITS],
    ['per-client limit off', NO_RATE_LIMITS],
  ] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-junk-'));
    try {
      const broker = await startTestBroker(dir, [pki.root.pem], { rateLimits });
      const before = await auditBytes(join(dir, 'state'));
      let run: Run;
      try {
        run = await runJunk(broker.url, bodies);
      } finally {
        await broker.close(); // writes the pending refusal summary
      }
      const after = await auditBytes(join(dir, 'state'));
      const growth = after.bytes - before.bytes;
      rows.push({ name: `junk, ${label}`, ops: run.requests, seconds: run.seconds, opsPerSec: run.requests / run.seconds, usPerOp: (run.seconds * 1e6) / run.requests });
      results.push({ label, requests: run.requests, seconds: run.seconds, statuses: run.statuses, auditGrowthBytes: growth, auditRecords: after.records - before.records, underLimit: growth < LIMIT_BYTES });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const summary: Record<string, string> = {};
  for (const r of results) summary[`audit growth, ${String(r.label)} (bytes / records)`] = `${String(r.auditGrowthBytes)} / ${String(r.auditRecords)}`;
  summary['limit (bytes per 60 s)'] = String(LIMIT_BYTES);
  printTable(`bench/junk (one client, ${CONCURRENCY} concurrent, ${SECONDS} s, 32 names per request)`, rows, summary);
  const file = writeResults('junk', { rows, runs: results, seconds: SECONDS, concurrency: CONCURRENCY, limitBytes: LIMIT_BYTES });
  console.log(`wrote ${file}`);
  const over = results.filter((r) => !r.underLimit);
  if (over.length && SECONDS <= 60) throw new Error(`audit grew past ${LIMIT_BYTES} bytes: ${JSON.stringify(over)}`);
  return { runs: results };
}
