/**
 * Killing a writer mid-write (SIGKILL, no cleanup) loses no acknowledged
 * binding and no acknowledged audit record, and leaves every file valid.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileStore } from '../../broker/store/file-store.js';
import { AuditLog } from '../../broker/audit/log.js';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { loadOrCreateSigningKey } from '../../broker/signing-key.js';

const WRITER = fileURLToPath(new URL('../support/crash-writer.ts', import.meta.url));

async function runAndKill(dir: string, afterMs: number): Promise<string[]> {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`writer never became ready: ${err}`)), 20_000);
    child.stdout.on('data', () => {
      if (out.includes('ready\n')) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  await new Promise((r) => setTimeout(r, afterMs));
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  // Only complete lines were acknowledged.
  return out.slice(0, out.lastIndexOf('\n')).split('\n').filter((l) => l !== 'ready');
}

describe('crash safety', () => {
  it.each([150, 400, 700])('SIGKILL after %i ms loses nothing acknowledged', async (afterMs) => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-crash-'));
    try {
      const acked = await runAndKill(dir, afterMs);
      const binds = acked.filter((l) => l.startsWith('bind ')).map((l) => l.split(' '));
      expect(binds.length).toBeGreaterThan(0);

      const problems: string[] = [];
      const store = await FileStore.open(join(dir, 'store'), { onProblem: (p) => problems.push(p.message) });
      expect(problems).toEqual([]);
      const latest = new Map<string, number>();
      for (const [, secret, version] of binds) latest.set(secret!, Number(version));
      for (const [secret, version] of latest) expect(store.snapshot().bindings.get(secret)!.version).toBeGreaterThanOrEqual(version);
      // A temp file left by the kill is never mistaken for a binding.
      expect(store.snapshot().bindings.size).toBe(new Set(readdirSync(join(dir, 'store', 'bindings')).filter((f) => /^s\d\.json$/.test(f))).size);

      // Reopening the log (what a restarted broker does) repairs a torn tail; every acknowledged record is there.
      const key = await loadOrCreateSigningKey(join(dir, 'signing.jwk'));
      await (await AuditLog.open(join(dir, 'audit.jsonl'), { key: key.privateKey, kid: key.kid })).close();
      const text = readFileSync(join(dir, 'audit.jsonl'), 'utf8');
      const check = verifyAuditLog(text, key.publicKey);
      expect(check.problem).toBeUndefined();
      const logged = new Set(
        text.trim().split('\n').map((l) => JSON.parse(l) as { type: string; secret: string; version: number; client: string })
          .filter((r) => r.type === 'decision')
          .map((r) => `audit ${r.secret} ${r.version} ${r.client}`),
      );
      for (const line of acked.filter((l) => l.startsWith('audit '))) expect(logged.has(line), line).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
