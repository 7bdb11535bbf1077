/**
 * `verifyThreads` / `--verify-threads N`: attestation signature checks on libuv's thread pool, at most N at once.
 * The setting's validation (exact codes), a release end to end with it on, many releases in flight (each nonce
 * single use, every answer bound to its own request, one audit record per answer), and a document whose
 * signature fails refused with the same answer and audit code as a broker verifying on its event loop.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { ConfigError, DEFAULT_CONFIG, defaultVerifyThreads, loadConfigFile, resolveConfig, threadPoolSize, verifyThreadsProblem } from '../../broker/config.js';
import { createBroker, type RunningBroker } from '../../broker/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { TestEnclave, valueOf, type EnclaveResponse } from '../support/enclave.js';
import { auditCodesIn, startTestBrokerWithDb } from '../support/broker.js';
import { cli } from '../support/cli.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function configCode(fn: () => unknown): string {
  try {
    fn();
    return 'NO_ERROR';
  } catch (err) {
    return err instanceof ConfigError ? `${err.code}: ${err.message}` : `not a ConfigError: ${String(err)}`;
  }
}

describe('the verifyThreads setting', () => {
  const base = { store: '/tmp/keygate-vt-store', stateDir: '/tmp/keygate-vt-state' };

  it('defaults to one fewer than the cores, below the pool size (0 on one core), and accepts 0..pool size - 1', () => {
    expect(DEFAULT_CONFIG.verifyThreads).toBe(Math.max(0, Math.min(availableParallelism() - 1, threadPoolSize() - 1)));
    expect(resolveConfig(base).verifyThreads).toBe(DEFAULT_CONFIG.verifyThreads);
    expect([defaultVerifyThreads(1, 4), defaultVerifyThreads(2, 4), defaultVerifyThreads(4, 4), defaultVerifyThreads(16, 4), defaultVerifyThreads(16, 9), defaultVerifyThreads(2, 1)]).toEqual([0, 1, 3, 3, 8, 0]);
    expect(verifyThreadsProblem(DEFAULT_CONFIG.verifyThreads)).toBeUndefined();
    expect(verifyThreadsProblem(0, 1)).toBeUndefined();
    expect(verifyThreadsProblem(3, 4)).toBeUndefined();
    expect(verifyThreadsProblem(64, 65)).toBeUndefined();
  });

  it('refuses what is not an integer in 0..64 with CONFIG_INVALID', () => {
    for (const bad of [-1, 1.5, 65, Number.NaN, '2', null, true, [2]]) {
      expect(configCode(() => resolveConfig(base, { verifyThreads: bad as number })), String(bad)).toBe('CONFIG_INVALID: verifyThreads must be an integer in 0..64 (0: signatures checked on the event loop)');
    }
  });

  it('refuses N that leaves no pool thread for file I/O, naming the UV_THREADPOOL_SIZE it needs', () => {
    expect(verifyThreadsProblem(4, 4)).toBe('4 needs a thread pool of at least 5 threads (one kept for file I/O), but it has 4: start the broker with UV_THREADPOOL_SIZE=5 or more in its environment');
    expect(verifyThreadsProblem(1, 1)).toMatch(/UV_THREADPOOL_SIZE=2 /);
    // The config itself is checked for shape only (any command reads it, in any shell); the pool size is the
    // broker process's, checked when a broker starts (test/cli/verify-threads-admin-cli.test.ts).
    const size = threadPoolSize();
    expect(configCode(() => resolveConfig(base, { verifyThreads: size }))).toBe('NO_ERROR');
  });

  it('a broker refuses to start with N at or above its pool size (CONFIG_INVALID), opening nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-vt-start-'));
    try {
      const size = threadPoolSize();
      const config = resolveConfig({ store: join(dir, 'store'), stateDir: join(dir, 'state') }, { verifyThreads: size });
      const err = await createBroker(config).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).code).toBe('CONFIG_INVALID');
      expect((err as ConfigError).message).toBe(`verifyThreads ${verifyThreadsProblem(size, size)}`);
      expect(existsSync(join(dir, 'state'))).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reads the pool size as libuv does (unset: 4; atoi; 0 or unreadable: 1; negative: 1024; at most 1024)', () => {
    const of = (v: string | undefined): number => threadPoolSize(v === undefined ? {} : { UV_THREADPOOL_SIZE: v });
    expect([undefined, '8', '1', '0', '', 'x', '-3', '5000', ' 6', '7abc'].map(of)).toEqual([4, 8, 1, 1, 1, 1, 1024, 1024, 6, 7]);
  });

  it('is a config file setting', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-vt-file-'));
    try {
      writeFileSync(join(dir, 'c.json'), JSON.stringify({ store: 'store', stateDir: 'state', verifyThreads: 2 }));
      expect(resolveConfig(await loadConfigFile(join(dir, 'c.json'))).verifyThreads).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--verify-threads N overrides the config; a bad N is a usage error (exit 2) naming the flag', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-vt-cli-'));
    const saved = process.env.UV_THREADPOOL_SIZE;
    try {
      writeFileSync(join(dir, 'c.json'), JSON.stringify({ store: 'store', stateDir: 'state', verifyThreads: 1 }));
      const run = (...flags: string[]) => cli(['broker', '--config', join(dir, 'c.json'), ...flags, '--check-config'], undefined, dir);
      delete process.env.UV_THREADPOOL_SIZE; // the default pool: 4 threads
      const fromFile = await run();
      expect(fromFile.status, fromFile.stderr).toBe(0);
      expect((JSON.parse(fromFile.stdout) as { config: { verifyThreads: number } }).config.verifyThreads).toBe(1);
      const flag = await run('--verify-threads', '3');
      expect(flag.status, flag.stderr).toBe(0);
      expect((JSON.parse(flag.stdout) as { config: { verifyThreads: number } }).config.verifyThreads).toBe(3);
      for (const bad of ['x', '-1', '1.5', '65', '', '0x2']) {
        const r = await run(`--verify-threads=${bad}`);
        expect([r.status, r.stderr], bad).toEqual([2, `keygate broker: --verify-threads ${bad}: must be an integer in 0..64 (0: signatures checked on the event loop)\n(run "keygate broker --help" for usage)\n`]);
      }
      const tooMany = await run('--verify-threads', '4');
      expect([tooMany.status, tooMany.stderr]).toEqual([2, expect.stringContaining('--verify-threads 4: 4 needs a thread pool of at least 5 threads (one kept for file I/O), but it has 4: start the broker with UV_THREADPOOL_SIZE=5')]);
      process.env.UV_THREADPOOL_SIZE = '5';
      expect((await run('--verify-threads', '4')).status).toBe(0);
    } finally {
      if (saved === undefined) delete process.env.UV_THREADPOOL_SIZE;
      else process.env.UV_THREADPOOL_SIZE = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('a broker with verifyThreads', () => {
  let pki: TestPki;
  let poolDir: string;
  let syncDir: string;
  let pool: RunningBroker;
  let sync: RunningBroker;
  let poolJwk: JWK;

  beforeAll(async () => {
    pki = await createTestPki(Date.now());
    poolDir = mkdtempSync(join(tmpdir(), 'keygate-vt-pool-'));
    syncDir = mkdtempSync(join(tmpdir(), 'keygate-vt-sync-'));
    pool = await startTestBrokerWithDb(poolDir, [pki.root.pem], { verifyThreads: 2 });
    sync = await startTestBrokerWithDb(syncDir, [pki.root.pem], { verifyThreads: 0 });
    poolJwk = (await (await fetch(`${pool.url}/v1/broker-key`)).json()) as JWK;
  }, 60_000);

  afterAll(async () => {
    await pool?.close();
    await sync?.close();
    for (const d of [poolDir, syncDir]) if (d) rmSync(d, { recursive: true, force: true });
  });

  it('releases a secret end to end, bound to the request (nonce and document digest)', async () => {
    const enclave = new TestEnclave(pki, pool.url);
    const nonce = await enclave.challenge();
    const document = enclave.document(nonce);
    const res = await enclave.post(document, ['db']);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const claims = await enclave.open(res.body.secrets![0]!, poolJwk);
    expect([valueOf(claims), claims.nonce, claims.doc]).toEqual(['db-value', hex(nonce), sha256(document)]);
    expect(auditCodesIn(poolDir).at(-1)).toBe('RELEASED');
  });

  it('refuses a document whose COSE signature fails with the same answer and audit code as the event-loop verifier', async () => {
    const answers: Array<[number, string | undefined, string | undefined]> = [];
    for (const [broker, dir] of [[sync, syncDir], [pool, poolDir]] as const) {
      const enclave = new TestEnclave(pki, broker.url);
      const document = enclave.document(await enclave.challenge());
      document[document.length - 1]! ^= 0x01; // the last byte of the signature
      const res = await enclave.post(document, ['db']);
      answers.push([res.status, res.body.error?.code, auditCodesIn(dir).at(-1)]);
    }
    expect(answers[1]).toEqual(answers[0]);
    expect(answers[0]![1]).toBe('BAD_SIGNATURE');
  });

  it('keeps every promise with many releases in flight: each nonce used once, each answer its own, one audit record per answer', async () => {
    const enclaves = Array.from({ length: 4 }, () => new TestEnclave(pki, pool.url));
    const recordsBefore = auditCodesIn(poolDir).length;
    // 32 fresh documents, each sent twice at once (a replay racing the original), and 8 with a broken signature.
    const docs = await Promise.all(
      Array.from({ length: 40 }, async (_, k) => {
        const enclave = enclaves[k % enclaves.length]!;
        const nonce = await enclave.challenge();
        const document = enclave.document(nonce);
        if (k >= 32) document[document.length - 1 - (k % 96)]! ^= 0x01;
        return { k, enclave, nonce, document };
      }),
    );
    const sends = docs.flatMap((d) => (d.k < 32 ? [d, d] : [d]));
    const answers: Array<{ d: (typeof docs)[number]; res: EnclaveResponse }> = await Promise.all(sends.map(async (d) => ({ d, res: await d.enclave.post(d.document, ['db']) })));

    for (const d of docs) {
      const mine = answers.filter((a) => a.d === d).map((a) => a.res);
      if (d.k < 32) {
        // Exactly one of the two copies is answered with the secret; the other is refused as a used nonce.
        expect(mine.map((r) => r.status).sort()).toEqual([200, 401]);
        expect(mine.find((r) => r.status === 401)!.body.error?.code).toBe('NONCE_MISMATCH');
        const released = mine.find((r) => r.status === 200)!;
        const claims = await d.enclave.open(released.body.secrets![0]!, poolJwk);
        expect([valueOf(claims), claims.nonce, claims.doc]).toEqual(['db-value', hex(d.nonce), sha256(d.document)]);
      } else {
        expect([mine.length, mine[0]!.status, mine[0]!.body.error?.code]).toEqual([1, 401, 'BAD_SIGNATURE']);
      }
    }
    // Every release was audited before it was given (one record per answer with a secret); the refusals, which do
    // not depend on the names asked for, are recorded as the per-client sample allows (broker/audit/refusals.ts).
    const records = auditCodesIn(poolDir).slice(recordsBefore);
    expect(records.filter((c) => c === 'RELEASED').length).toBe(answers.filter((a) => a.res.status === 200).length);
    const refusals = records.filter((c) => c !== 'RELEASED');
    expect(refusals.length).toBeGreaterThan(0);
    expect(refusals.length).toBeLessThanOrEqual(answers.filter((a) => a.res.status !== 200).length);
    for (const code of refusals) expect(['NONCE_MISMATCH', 'BAD_SIGNATURE']).toContain(code);
  }, 60_000);
});
