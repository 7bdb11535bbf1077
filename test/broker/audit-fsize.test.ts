/**
 * A real broker process under RLIMIT_FSIZE (prlimit): once the audit file
 * hits the limit, releases fail (nothing acknowledged without its record),
 * /readyz turns 503, the cause is logged once; when the limit is lifted the
 * log recovers by itself, and every HTTP 200 has its record in a log that
 * `keygate audit verify` passes.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { keygate } from '../support/cli.js';
import { createTestPki } from '../support/pki.js';
import { TestEnclave } from '../support/enclave.js';
import { prepareBrokerDir, spawnBroker } from '../support/broker-process.js';
import { loadOrCreateSigningKey } from '../../broker/signing-key.js';
import { loadOrCreateKeyFile } from '../../broker/kms/local.js';

const LIMIT = 12_000;

async function until<T>(probe: () => Promise<T | undefined>, what: string, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('audit log under RLIMIT_FSIZE (real broker process)', () => {
  it('acknowledges no release whose record is not durable, goes unready, and recovers without a restart', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-fsize-'));
    try {
      const pki = await createTestPki(Date.now());
      const config = await prepareBrokerDir(dir, pki);
      await loadOrCreateSigningKey(join(dir, 'state', 'broker-signing-key.jwk'));
      await loadOrCreateKeyFile(join(dir, 'state', 'challenge.key'), 32); // every other file exists before the limit applies

      const { child, url, stderr: brokerStderr } = await spawnBroker(config, ['prlimit', `--fsize=${LIMIT}:unlimited`]);
      const exited = new Promise<number | null>((r) => child.once('exit', r));
      const acknowledged: string[] = [];
      const failures: string[] = [];
      try {
        const enclave = new TestEnclave(pki, url);
        const attempt = async (): Promise<void> => {
          const nonce = await enclave.challenge();
          const res = await enclave.post(enclave.document(nonce), ['db']);
          if (res.status === 200) acknowledged.push(Buffer.from(nonce).toString('hex'));
          else failures.push(res.body.error!.code);
        };
        // Concurrent batches until writes hit the limit (the file cannot hold more than ~LIMIT bytes).
        for (let round = 0; round < 200 && failures.length === 0; round++) await Promise.all([attempt(), attempt(), attempt()]);
        expect(failures.length).toBeGreaterThan(0);
        expect(new Set(failures)).toEqual(new Set(['INTERNAL_ERROR']));
        expect(acknowledged.length).toBeGreaterThan(3);
        const readyz = async (): Promise<number> => (await fetch(`${url}/readyz`)).status;
        expect(await readyz()).toBe(503);
        await attempt(); // still broken: refused, not acknowledged
        expect(failures.length).toBeGreaterThan(1);

        const lifted = spawnSync('prlimit', ['--pid', String(child.pid), '--fsize=unlimited']);
        expect(lifted.status, String(lifted.stderr)).toBe(0);
        await until(async () => ((await readyz()) === 200 ? true : undefined), '/readyz 200 after the limit was lifted');
        const before = acknowledged.length;
        await Promise.all([attempt(), attempt(), attempt()]);
        expect(acknowledged.length).toBe(before + 3);
      } finally {
        child.kill('SIGTERM');
        await exited;
      }
      const errors = brokerStderr().split('\n').filter((l) => l.includes('"level":"error"'));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(/audit log write failed.*"code":"EFBIG"/);
      expect(brokerStderr()).toMatch(/audit log recovered/);

      const file = join(dir, 'state', 'audit.jsonl');
      const text = readFileSync(file, 'utf8');
      const logged = new Set(text.trim().split('\n').map((l) => JSON.parse(l) as { decision?: string; nonce?: string }).filter((r) => r.decision === 'release').map((r) => r.nonce));
      const verify = keygate(['audit', 'verify', file, '--state', join(dir, 'state')]);
      expect(verify.stdout).toMatch(/audit log intact/);
      expect(verify.status).toBe(0);
      // Every acknowledged release is in the log (by nonce), and no release that failed is.
      for (const nonce of acknowledged) expect(logged.has(nonce), nonce).toBe(true);
      expect(logged.size).toBe(acknowledged.length);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});

