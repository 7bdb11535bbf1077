/**
 * `keygate broker --workers N`: N real worker processes behind one port (node:cluster), with the
 * guarantees of one broker: a nonce is single use across workers, quarantine is one for all, every
 * acknowledged release has its record in a worker's own audit chain (SIGKILL of a worker included),
 * a CLI revocation is seen by every worker, and --workers 1 is the single process it always was.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, h } from '../support/enclave.js';
import { prepareBrokerDir, spawnBroker } from '../support/broker-process.js';
import { alive, workerPids } from '../support/workers.js';
import { until } from '../support/poll.js';
import { keygate } from '../support/cli.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';

interface Answer {
  readonly status: number;
  readonly code?: string;
}

/** POST /v1/secrets on a connection of its own (no keep-alive), so the primary hands each one to the next worker. */
function postFresh(url: string, document: Uint8Array, names: string[]): Promise<Answer> {
  const body = JSON.stringify({ attestation: Buffer.from(document).toString('base64'), names });
  return new Promise((resolve, reject) => {
    const req = request(`${url}/v1/secrets`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          code = undefined;
        }
        resolve({ status: res.statusCode ?? 0, ...(code ? { code } : {}) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error('request timed out')));
    req.end(body);
  });
}

/** GET /v1/challenge on a connection of its own. */
function challengeFresh(url: string): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/v1/challenge`, { agent: false }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        try {
          resolve(new Uint8Array(Buffer.from((JSON.parse(text) as { nonce: string }).nonce, 'base64')));
        } catch (err) {
          reject(err as Error);
        }
      });
    });
    req.on('error', reject);
    req.setTimeout(15_000, () => req.destroy(new Error('request timed out')));
    req.end();
  });
}

interface AuditLine {
  readonly decision?: string;
  readonly code?: string;
  readonly nonce?: string | null;
  readonly secret?: string | null;
}

/** The decision records of one worker's audit chain (its live file; these tests never rotate). */
function records(dir: string, worker: number): AuditLine[] {
  const file = join(dir, 'state', `audit.w${worker}.jsonl`);
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as AuditLine];
      } catch {
        return []; // a torn last line (a killed worker): never acknowledged
      }
    });
}




let cleanup: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

/** A broker dir (test root trusted, `db` bound to APPROVED) with `rateLimits` merged in, and its cluster of `workers`. */
async function cluster(workers: number | undefined, rateLimits: Record<string, number> = {}, extraBind?: (dir: string) => Promise<void>): Promise<{ dir: string; pki: TestPki; url: string; child: ChildProcessWithoutNullStreams; stderr: () => string }> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-workers-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  const pki = await createTestPki(Date.now());
  const config = await prepareBrokerDir(dir, pki);
  const parsed = JSON.parse(readFileSync(config, 'utf8')) as { rateLimits: Record<string, number> };
  writeFileSync(config, JSON.stringify({ ...parsed, rateLimits: { ...parsed.rateLimits, ...rateLimits } }));
  await extraBind?.(dir);
  const { child, url, stderr } = await spawnBroker(config, [], workers === undefined ? [] : ['--workers', String(workers)]);
  const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
  cleanup.push(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  await until('every worker listening', () => new Set(workerPids(stderr()).map((w) => w.worker)).size === workers || workers === undefined || workers === 1);
  return { dir, pki, url, child, stderr };
}

describe('keygate broker --workers 2', () => {
  it('one document replayed on many connections is released exactly once across the workers', async () => {
    const { dir, pki, url } = await cluster(2);
    const enclave = new TestEnclave(pki, url);
    const doc = enclave.document(await challengeFresh(url));
    const answers = await Promise.all(Array.from({ length: 24 }, () => postFresh(url, doc, ['db'])));
    expect(answers.filter((a) => a.status === 200)).toHaveLength(1);
    for (const a of answers.filter((x) => x.status !== 200)) expect(a.code).toBe('NONCE_MISMATCH');
    // Both workers saw the document (the connections alternate between them): the single use held across processes.
    await until('both chains written', () => records(dir, 1).some((r) => r.decision) && records(dir, 2).some((r) => r.decision));
    const all = [...records(dir, 1), ...records(dir, 2)];
    expect(all.filter((r) => r.decision === 'release')).toHaveLength(1);
  }, 180_000);

  it('a quarantine reached by denials spread over the workers is honoured by every worker', async () => {
    const { dir, pki, url } = await cluster(2, { quarantineAfterDenials: 4, quarantineWindowSeconds: 600, quarantineSeconds: 600 }, async (d) => {
      // `other` is bound to another image: asking for it is a policy denial that counts towards quarantine.
      const store = await FileStore.open(join(d, 'store'));
      await bindSecret(store, await LocalKeyProvider.open(join(d, 'state', 'local-provider.key')), { secret: 'other', value: new TextEncoder().encode('o'), allow: [pcrSet({ 0: h(0x99), 1: h(0x22), 2: h(0x33) })], provider: 'local' });
    });
    const enclave = new TestEnclave(pki, url);
    // One at a time, each on a new connection: the primary hands them to the workers in turn (the challenges
    // come over one kept-alive connection, so they do not shift the turn).
    for (let i = 0; i < 4; i++) {
      const a = await postFresh(url, enclave.document(await enclave.challenge()), ['other']);
      expect(a.status).toBe(403);
    }
    const denials = (w: number): number => records(dir, w).filter((r) => r.decision === 'deny' && r.secret === 'other').length;
    expect(denials(1)).toBeGreaterThan(0);
    expect(denials(2)).toBeGreaterThan(0);
    expect(denials(1) + denials(2)).toBe(4);
    // Neither worker saw 4 denials itself, yet both refuse the allowed secret now.
    for (let i = 0; i < 6; i++) {
      const a = await postFresh(url, enclave.document(await enclave.challenge()), ['db']);
      expect(a.code).toBe('QUARANTINED');
    }
    for (const w of [1, 2]) expect(records(dir, w).some((r) => r.code === 'QUARANTINED'), `worker ${w}`).toBe(true);
    expect([...records(dir, 1), ...records(dir, 2)].some((r) => r.decision === 'release')).toBe(false);
  }, 180_000);

  it('a revocation by the CLI is seen by every worker at its next request', async () => {
    const { dir, pki, url } = await cluster(2);
    const enclave = new TestEnclave(pki, url);
    for (let i = 0; i < 4; i++) expect((await postFresh(url, enclave.document(await enclave.challenge()), ['db'])).status).toBe(200);
    for (const w of [1, 2]) expect(records(dir, w).some((r) => r.decision === 'release'), `worker ${w}`).toBe(true);
    const revoked = keygate(['revoke', '--pcr0', APPROVED[0], '--config', join(dir, 'keygate.json')]);
    expect(revoked.status, revoked.stderr).toBe(0);
    for (let i = 0; i < 6; i++) expect((await postFresh(url, enclave.document(await enclave.challenge()), ['db'])).code).toBe('REVOKED');
    const codes = (w: number): string[] => records(dir, w).filter((r) => r.decision === 'deny').map((r) => r.code ?? '');
    for (const w of [1, 2]) expect(codes(w).length, `worker ${w}`).toBeGreaterThan(0);
    expect([...codes(1), ...codes(2)].every((c) => /REVOKED/.test(c)), [...codes(1), ...codes(2)].join()).toBe(true);
  }, 180_000);

  it('SIGKILL of a worker under load: every acknowledged release has its record, the worker is restarted, the chains verify, SIGTERM stops all', async () => {
    const { dir, pki, url, child, stderr } = await cluster(2);
    const enclave = new TestEnclave(pki, url);
    const first = workerPids(stderr()).find((w) => w.worker === 1)!;
    const acknowledged: string[] = [];
    let failed = 0;
    let killed = false;
    const one = async (i: number): Promise<void> => {
      if (i === 20 && !killed) {
        killed = true;
        process.kill(first.pid, 'SIGKILL');
      }
      try {
        const nonce = await challengeFresh(url);
        const a = await postFresh(url, enclave.document(nonce), ['db']);
        if (a.status === 200) acknowledged.push(Buffer.from(nonce).toString('hex'));
      } catch {
        failed++; // the connection died with the worker (or its handle with it, in the primary): nothing was acknowledged
      }
    };
    // 80 requests, 8 at a time.
    for (let batch = 0; batch < 10; batch++) await Promise.all(Array.from({ length: 8 }, (_, k) => one(batch * 8 + k)));
    expect(killed).toBe(true);
    expect(acknowledged.length).toBeGreaterThan(40);
    // The primary restarted worker 1 (a new pid) and the service went on.
    await until('worker 1 restarted', () => workerPids(stderr()).filter((w) => w.worker === 1).length >= 2);
    expect((await postFresh(url, enclave.document(await challengeFresh(url)), ['db'])).status).toBe(200);
    const pids = [...new Set(workerPids(stderr()).map((w) => w.pid))];
    child.kill('SIGTERM');
    await until('primary exited', () => child.exitCode !== null);
    expect(child.exitCode).toBe(0);
    for (const pid of pids) expect(alive(pid), `worker ${pid}`).toBe(false);

    const released = new Set([...records(dir, 1), ...records(dir, 2)].filter((r) => r.decision === 'release').map((r) => r.nonce));
    for (const nonce of acknowledged) expect(released.has(nonce), nonce).toBe(true);
    const verify = keygate(['audit', 'verify', join(dir, 'state'), '--state', join(dir, 'state')]);
    expect(verify.stdout + verify.stderr).toMatch(/audit logs intact: 2 chains \(signatures verified\)/);
    expect(verify.status).toBe(0);
    expect(readdirSync(join(dir, 'state')).filter((f) => f.endsWith('.jsonl')).sort()).toEqual(['audit.w1.jsonl', 'audit.w2.jsonl']);
  }, 240_000);
});

describe('keygate broker --workers 1, and without --workers (the default is 1 until N > 1 stops costing more CPU per release)', () => {
  it.each([[1], [undefined]])('--workers %s is the single process it always was: no workers, the audit in audit.jsonl', async (workers) => {
    const { dir, pki, url, stderr } = await cluster(workers);
    const enclave = new TestEnclave(pki, url);
    expect((await postFresh(url, enclave.document(await challengeFresh(url)), ['db'])).status).toBe(200);
    expect(workerPids(stderr())).toEqual([]);
    expect(readdirSync(join(dir, 'state')).filter((f) => f.endsWith('.jsonl'))).toEqual(['audit.jsonl']);
  }, 120_000);
});
