/**
 * Three real `keygate broker` processes on one DynamoDB config (moto_server:
 * store, nonces, quarantine and shared keys in DynamoDB, KMS alias/keygate),
 * administered through the real CLI:
 *  - a simulated enclave gets the same value from every replica, signed with
 *    the same broker key (the shared signing key);
 *  - one attestation document replayed to all three at once is released once;
 *  - a rotation and a revocation through the CLI reach every replica within
 *    the stated bound (maxStalenessMs 1000 plus one read), measured;
 *  - two admins rotating one secret from two processes lose no version;
 *  - kill -9 of one replica under load: every release a client saw
 *    acknowledged has its audit record, every chain verifies, the other
 *    replicas keep serving.
 * Where moto differs from AWS: its KMS ignores a Recipient (not used here:
 * the broker decrypts and re-encrypts to the enclave key itself), and it is
 * run one request at a time (see test/support/moto.ts), which makes it slower
 * than DynamoDB, not more forgiving.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { awsOf, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../support/enclave.js';
import {
  createKmsAlias,
  keygateAsync,
  recordedReleases,
  releaseKey,
  spawnReplica,
  stopReplica,
  writeReplicaConfig,
  type AcknowledgedRelease,
  type Replica,
} from '../support/replicas.js';

/** The config's store.consistency.maxStalenessMs (the example's default). */
const MAX_STALENESS_MS = 1000;
/**
 * The stated bound is maxStalenessMs plus one store read; on this shared 2-core machine (moto serving one
 * request at a time, three brokers, the load generator) one read is given this much.
 */
const ONE_READ_SLACK_MS = 2000;

let moto: Moto;
let pki: TestPki;
let dir: string;
let config: string;
let env: NodeJS.ProcessEnv;
let brokerJwk: JWK;
let auditTable: string;
/** When the CLI bound the secrets in beforeAll. */
let boundAt: number;
const replicas: Replica[] = [];
/** Every process started here, killed in afterAll whatever happened. */
const started: Replica[] = [];

const admin = (args: string[], input?: string) => keygateAsync([...args, '--config', config], env, input);
const pcrFlags = ['--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2]];

async function start(name: string): Promise<Replica> {
  const stateDir = join(dir, name);
  mkdirSync(stateDir, { recursive: true });
  const r = await spawnReplica(name, config, stateDir, env);
  started.push(r);
  return r;
}

interface Answer {
  status: number;
  code?: string;
  value?: string;
  version?: number;
  kid?: string;
}

/** One full client flow against one replica (challenge from it, fresh document, POST), opened when released. */
async function ask(r: Replica, enclave: TestEnclave, name: string): Promise<Answer> {
  const res = await enclave.request([name]);
  if (res.status !== 200) return { status: res.status, code: res.body.error?.code ?? 'NO_CODE' };
  const jwk = (await (await fetch(`${r.url}/v1/broker-key`)).json()) as JWK;
  const claims = await enclave.open(res.body.secrets![0]!, jwk);
  return { status: 200, value: valueOf(claims), version: claims.ver, kid: jwk.kid! };
}

interface Visibility {
  replica: string;
  /** From `since` to the end of the first answer that showed the change. */
  seenAfterMs: number;
  /** Start of the last request (relative to `since`) that still got the old answer; null when none did. */
  lastOldStartMs: number | null;
  polls: number;
}

/** Polls one replica (no fixed sleeps: back-to-back requests) until `changed(answer)`, bounded by 30 s. */
async function pollUntil(r: Replica, name: string, since: number, changed: (a: Answer) => boolean): Promise<Visibility> {
  const enclave = new TestEnclave(pki, r.url);
  let lastOldStartMs: number | null = null;
  for (let polls = 1; ; polls++) {
    if (performance.now() - since > 30_000) throw new Error(`${r.name} did not show the change within 30 s (${polls - 1} polls)`);
    const t = performance.now();
    let answer: Answer;
    try {
      answer = await ask(r, enclave, name);
    } catch (err) {
      // A pooled keep-alive connection the broker closed just as it was reused (undici: UND_ERR_SOCKET): no
      // answer, so neither state was shown; ask again. Anything else fails the test.
      if ((err as { cause?: { code?: string } }).cause?.code !== 'UND_ERR_SOCKET') throw err;
      continue;
    }
    // Under load a store read may time out: 503 STORE_UNAVAILABLE releases nothing (fail closed), and shows neither answer.
    if (answer.status === 503 && answer.code === 'STORE_UNAVAILABLE') continue;
    if (changed(answer)) return { replica: r.name, seenAfterMs: Math.round(performance.now() - since), lastOldStartMs: lastOldStartMs === null ? null : Math.round(lastOldStartMs), polls };
    lastOldStartMs = t - since;
  }
}

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  env = { ...process.env, ...moto.env };
  await createKmsAlias(moto);
  dir = mkdtempSync(join(tmpdir(), 'keygate-replicas-'));
  auditTable = uniqueName('keygate-audit');
  config = writeReplicaConfig(dir, {
    storeTable: uniqueName('keygate'),
    sharedTable: uniqueName('keygate-shared'),
    auditTable,
    archiveBucket: uniqueName('keygate-archive').toLowerCase(),
    extraRootPems: [pki.root.pem],
    maxStalenessMs: MAX_STALENESS_MS,
  });
  const init = await admin(['store', 'init']);
  expect(init.status, init.stderr).toBe(0);
  // All three start at once: they race to create the shared keys, and one conditional put wins.
  replicas.push(...(await Promise.all(['replica-a', 'replica-b', 'replica-c'].map(start))));
  for (const [secret, value] of [['db', 'db-v1'], ['doomed', 'doomed-v1']] as const) {
    const bound = await admin(['bind', secret, ...pcrFlags, '--value-stdin', '--provider', 'aws-kms', '--kms-key-id', 'alias/keygate'], value);
    expect(bound.status, bound.stderr).toBe(0);
  }
  boundAt = performance.now();
  brokerJwk = (await (await fetch(`${replicas[0]!.url}/v1/broker-key`)).json()) as JWK;
}, 180_000);

afterAll(async () => {
  await Promise.all(started.map((r) => stopReplica(r, 'SIGKILL')));
  await moto?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
}, 60_000);

describe('three broker replicas on one DynamoDB config', () => {
  it('a simulated enclave gets the same value from every replica, signed by the same shared broker key', async () => {
    // The bindings were made just before (beforeAll): a replica may serve its previous snapshot for up to
    // maxStalenessMs, so each is first asked until it knows the binding (bounded by pollUntil).
    await Promise.all(replicas.map((r) => pollUntil(r, 'db', boundAt, (a) => a.status === 200)));
    const answers = await Promise.all(replicas.map((r) => ask(r, new TestEnclave(pki, r.url), 'db')));
    expect(answers).toEqual(replicas.map(() => ({ status: 200, value: 'db-v1', version: 1, kid: brokerJwk.kid })));
  });

  it('one document replayed to all three replicas at once is released exactly once; the others answer NONCE_MISMATCH', async () => {
    const enclave = new TestEnclave(pki, replicas[0]!.url);
    const doc = enclave.document(await enclave.challenge());
    const results = await Promise.all(replicas.map((r) => new TestEnclave(pki, r.url).post(doc, ['db'])));
    const released = results.filter((r) => r.status === 200);
    expect(released).toHaveLength(1);
    expect(released[0]!.body.secrets).toHaveLength(1);
    const refused = results.filter((r) => r.status !== 200);
    expect(refused.map((r) => [r.status, r.body.error?.code, r.body.secrets])).toEqual([
      [401, 'NONCE_MISMATCH', undefined],
      [401, 'NONCE_MISMATCH', undefined],
    ]);
    for (const r of refused) expect(r.body.error?.message).toMatch(/used/);
  });

  it('a rotation and a revocation through the CLI reach every replica within maxStalenessMs plus one read', async () => {
    const bound = MAX_STALENESS_MS + ONE_READ_SLACK_MS;
    // Rotation: every replica serves the new value; none serves the old one to a request started after the bound.
    const rotateStart = performance.now();
    const rotated = await admin(['rotate', 'doomed', '--value-stdin'], 'doomed-v2');
    expect(rotated.status, rotated.stderr).toBe(0);
    const rotatedAt = performance.now();
    const rotation = await Promise.all(replicas.map((r) => pollUntil(r, 'doomed', rotatedAt, (a) => a.status === 200 && a.value === 'doomed-v2')));

    const revokeStart = performance.now();
    const revoked = await admin(['revoke', 'doomed']);
    expect(revoked.status, revoked.stderr).toBe(0);
    const revokedAt = performance.now();
    const revocation = await Promise.all(
      replicas.map((r) =>
        pollUntil(r, 'doomed', revokedAt, (a) => {
          if (a.status === 200) return false;
          expect([a.status, a.code]).toEqual([403, 'POLICY_DENIED']);
          return true;
        }),
      ),
    );
    console.log(
      `staleness (maxStalenessMs ${MAX_STALENESS_MS}; times from the CLI's exit, the CLI itself took rotate ${Math.round(rotatedAt - rotateStart)} ms, revoke ${Math.round(revokedAt - revokeStart)} ms):\n` +
        `  rotation   ${JSON.stringify(rotation)}\n  revocation ${JSON.stringify(revocation)}`,
    );
    for (const v of [...rotation, ...revocation]) {
      // A request started after the bound never got the old answer ...
      expect(v.lastOldStartMs ?? 0, `${v.replica} served the old answer to a request started ${v.lastOldStartMs} ms after the change`).toBeLessThanOrEqual(bound);
    }
    // ... and the revocation stays: every replica refuses again, with the code enclaves see.
    const again = await Promise.all(replicas.map((r) => ask(r, new TestEnclave(pki, r.url), 'doomed')));
    expect(again.map((a) => [a.status, a.code])).toEqual(replicas.map(() => [403, 'POLICY_DENIED']));
  }, 120_000);

  it('two admins rotating one secret concurrently from two processes: versions strictly increase, none is lost', async () => {
    const listed = await admin(['list', '--json']);
    expect(listed.status, listed.stderr).toBe(0);
    const versionOf = (text: string): number => (JSON.parse(text) as { bindings: Array<{ secret: string; version: number }> }).bindings.find((b) => b.secret === 'db')!.version;
    const initial = versionOf(listed.stdout);
    const ROTATIONS = 10;
    // Each admin rotates ROTATIONS times; a rotation that races the other admin's lands after it (the value is
    // encrypted outside the transaction, under the same provider and key): none is refused, none is lost.
    const rotateAll = async (who: string): Promise<Array<{ version: number; value: string }>> => {
      const done: Array<{ version: number; value: string }> = [];
      for (let i = 0; i < ROTATIONS; i++) {
        const value = `${who}-${i}`;
        const run = await admin(['rotate', 'db', '--value-stdin'], value);
        expect(run.status, run.stderr).toBe(0);
        const m = /rotated db to version (\d+)/.exec(run.stdout);
        expect(m, run.stdout).not.toBeNull();
        done.push({ version: Number(m![1]), value });
      }
      return done;
    };
    const [a, b] = await Promise.all([rotateAll('alice'), rotateAll('bob')]);
    for (const mine of [a, b]) {
      const versions = mine.map((r) => r.version);
      expect(versions).toEqual([...versions].sort((x, y) => x - y)); // each admin's versions increase
      expect(new Set(versions).size).toBe(versions.length);
    }
    const all = [...a, ...b].sort((x, y) => x.version - y.version);
    // Every reported version is distinct and they are exactly initial+1 .. initial+20: none lost, none reused.
    expect(all.map((r) => r.version)).toEqual(Array.from({ length: 2 * ROTATIONS }, (_, i) => initial + 1 + i));
    const after = await admin(['list', '--json']);
    expect(versionOf(after.stdout)).toBe(initial + 2 * ROTATIONS);
    // The replicas release the value of the last version.
    const last = all.at(-1)!;
    const since = performance.now();
    await Promise.all(replicas.map((r) => pollUntil(r, 'db', since, (a) => a.status === 200 && a.version === last.version && a.value === last.value)));
    console.log(`concurrent rotations: 2 admins x ${ROTATIONS}, versions ${initial + 1}..${last.version}`);
  }, 150_000);

  it('kill -9 of one replica under load: every acknowledged release has its audit record, every chain verifies, the others keep serving', async () => {
    const victim = replicas[1]!;
    const acks: Array<AcknowledgedRelease & { at: number }> = [];
    const failures: string[] = [];
    let unavailable = 0;
    let killedAt = Number.POSITIVE_INFINITY;
    let stop = false;
    const CLIENTS_PER_REPLICA = 3;
    const worker = async (r: Replica): Promise<void> => {
      const enclave = new TestEnclave(pki, r.url);
      while (!stop) {
        try {
          const nonce = await enclave.challenge();
          const doc = enclave.document(nonce);
          const res = await enclave.post(doc, ['db']);
          if (res.status === 200 && res.body.secrets?.length === 1) {
            acks.push({ replica: r.name, nonce: Buffer.from(nonce).toString('hex'), docSha256: createHash('sha256').update(doc).digest('hex'), at: performance.now() });
          } else if (res.status === 503 && res.body.error?.code === 'STORE_UNAVAILABLE') unavailable++; // fail closed under load: nothing released
          else failures.push(`${r.name}: ${res.status} ${res.body.error?.code}`);
        } catch (err) {
          // The victim's connections are cut by the kill: those clients got nothing, and stop.
          if (r === victim && performance.now() >= killedAt) return;
          failures.push(`${r.name}: ${(err as Error).message}`);
        }
      }
    };
    const load = Promise.all(replicas.flatMap((r) => Array.from({ length: CLIENTS_PER_REPLICA }, () => worker(r))));
    const count = (name: string, after = 0): number => acks.filter((a) => a.replica === name && a.at > after).length;
    const waitFor = async (what: string, done: () => boolean): Promise<void> => {
      const deadline = performance.now() + 60_000;
      while (!done()) {
        if (performance.now() > deadline || failures.length) {
          stop = true;
          throw new Error(`${what} not reached in 60 s; failures: ${failures.slice(0, 5).join('; ')}`);
        }
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setTimeout(r, 20)); // a polling interval, not a wait for an outcome
      }
    };
    try {
      await waitFor('20 releases by the victim', () => count(victim.name) >= 20);
      killedAt = performance.now();
      victim.child.kill('SIGKILL');
      await victim.exited;
      // The survivors keep serving after the kill.
      await waitFor('20 releases by each survivor after the kill', () => replicas.filter((r) => r !== victim).every((r) => count(r.name, killedAt) >= 20));
    } finally {
      stop = true;
      await load;
    }
    expect(failures).toEqual([]);

    // What a restart does: the victim's state directory reopens (its torn tail, never acknowledged, cut), and it serves again.
    const restarted = await start('replica-b');
    expect(await ask(restarted, new TestEnclave(pki, restarted.url), 'db')).toMatchObject({ status: 200, kid: brokerJwk.kid });
    await Promise.all([restarted, ...replicas.filter((r) => r !== victim)].map((r) => stopReplica(r)));

    // Every replica's chain in the audit table verifies (seals under the shared key, which the CLI loads itself),
    // and every release a client saw acknowledged is a RELEASED record in the chain of the process that answered it.
    const recorded = await recordedReleases(config, { kind: 'dynamodb', table: auditTable, ...awsOf(moto) }, env);
    expect(recorded.verify.status, recorded.verify.stdout + recorded.verify.stderr).toBe(0);
    const verified = JSON.parse(recorded.verify.stdout) as { ok: boolean; key: { sealsVerified: boolean }; chains: Array<{ id: string; ok: boolean }> };
    expect(verified.ok).toBe(true);
    expect(verified.key.sealsVerified).toBe(true);
    expect(verified.chains.map((c) => c.id).sort()).toEqual([...replicas, restarted].map((r) => r.chainId()!).sort());
    const byReplica = new Map<string, number>();
    for (const r of replicas) {
      const chain = recorded.released.get(r.chainId()!);
      expect(chain, `${r.name}: no chain ${r.chainId()} in the audit table`).toBeDefined();
      const mine = acks.filter((a) => a.replica === r.name);
      byReplica.set(r.name, mine.length);
      const missing = mine.filter((a) => !chain!.has(releaseKey(a)));
      expect(missing, `${r.name}: acknowledged releases without an audit record`).toEqual([]);
    }
    console.log(`kill -9 under load: acknowledged releases per replica ${JSON.stringify(Object.fromEntries(byReplica))} (victim ${victim.name}), all in their replica's chain; ${unavailable} answered 503 STORE_UNAVAILABLE`);

    // The chains go to the S3 archive under compliance lock; the archive and the table then verify together.
    const exported = await admin(['audit', 'export']);
    expect(exported.status, exported.stdout + exported.stderr).toBe(0);
    expect(exported.stdout).toMatch(new RegExp(`${verified.chains.length} chain\\(s\\) to s3://`));
    const again = await admin(['audit', 'export']);
    expect(again.stdout).not.toMatch(/[1-9]\d* segment\(s\) written/);
    const both = await admin(['audit', 'verify', '--archive']);
    expect(both.status, both.stdout + both.stderr).toBe(0);
    expect(both.stdout).toMatch(/audit chains intact/);
    expect(both.stdout).toMatch(/archive s3:\/\/\S+ intact, table matches it/);
  }, 150_000);
});
