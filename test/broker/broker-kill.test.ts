/**
 * SIGKILL the real broker process while it serves releases: every release a
 * client received has its audit record, and the log still verifies.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestPki } from '../support/pki.js';
import { TestEnclave } from '../support/enclave.js';
import { prepareBrokerDir, spawnBroker } from '../support/broker-process.js';
import { FileStore } from '../../broker/store/file-store.js';
import { AuditLog } from '../../broker/audit/log.js';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { loadOrCreateSigningKey } from '../../broker/signing-key.js';

describe('killing the broker', () => {
  it('loses no audit record of a release a client received', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-kill-'));
    try {
      const pki = await createTestPki(Date.now());
      const config = await prepareBrokerDir(dir, pki);
      const { child, url } = await spawnBroker(config);
      const exited = new Promise((r) => child.once('exit', r));

      const enclave = new TestEnclave(pki, url);
      const nonces = await Promise.all(Array.from({ length: 60 }, () => enclave.challenge()));
      const docs = nonces.map((n) => enclave.document(n));
      const received: string[] = [];
      let killed = false;
      await Promise.all(
        docs.map(async (doc, i) => {
          try {
            const res = await enclave.post(doc, ['db']);
            if (res.status === 200) received.push(Buffer.from(nonces[i]!).toString('hex'));
          } catch {
            // connection cut by the kill: the client got nothing
          }
          if (i === 25 && !killed) {
            killed = true;
            child.kill('SIGKILL');
          }
        }),
      );
      if (!killed) child.kill('SIGKILL');
      await exited;
      expect(received.length).toBeGreaterThan(0);

      const key = await loadOrCreateSigningKey(join(dir, 'state', 'broker-signing-key.jwk'));
      await (await AuditLog.open(join(dir, 'state', 'audit.jsonl'), { key: key.privateKey, kid: key.kid })).close(); // what a restart does
      const text = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8');
      expect(verifyAuditLog(text, key.publicKey).problem).toBeUndefined();
      const logged = new Set(
        text.trim().split('\n').map((l) => JSON.parse(l) as { decision?: string; nonce?: string }).filter((r) => r.decision === 'release').map((r) => r.nonce),
      );
      for (const nonce of received) expect(logged.has(nonce), nonce).toBe(true);
      expect((await FileStore.open(join(dir, 'store'))).problems()).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
