/**
 * The nonce registry: one contract, two implementations (in memory: single
 * use per broker; DynamoDB: single use across every replica), the DynamoDB
 * one against moto_server (an independent implementation of DynamoDB), and the
 * replay promise through real brokers sharing one table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DeleteItemCommand, DescribeTimeToLiveCommand, DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { MemoryNonceRegistry } from '../../broker/nonce/memory-registry.js';
import { DynamoDbNonceRegistry, NONCE_TTL_ATTRIBUTE, NONCE_TTL_MARGIN_MS, nonceItemKey, type DynamoDbNonceSettings } from '../../broker/nonce/dynamodb-registry.js';
import { initNonceTable, openNonceRegistry } from '../../broker/nonce/open-registry.js';
import type { NonceRegistry, NonceUse } from '../../broker/nonce/registry.js';
import { NonceRegistryUnavailableError } from '../../broker/nonce/registry.js';
import { ChallengeService } from '../../broker/challenge.js';
import { ConfigError, loadConfigFile, resolveConfig } from '../../broker/config.js';
import { startTestBrokerWithDb, auditCodesIn } from '../support/broker.js';
import { awsOf, closedPort, motoTable, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { startThrottlingDynamoDb } from '../support/dynamodb-throttle.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { TestEnclave } from '../support/enclave.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let pki: TestPki;
const tempDir = tempDirs('keygate-nonces-');

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
});
afterAll(async () => {
  await moto?.stop();
});

const dynamo = (table: string, extra: Partial<DynamoDbNonceSettings> = {}): DynamoDbNonceSettings => motoTable(moto, table, extra);


/** Nonce ids (64 hex, like the real ones): unique to this run, stable for one `n`. */
const RUN = randomBytes(28).toString('hex');
const id = (n: number): string => `${RUN}${n.toString(16).padStart(8, '0')}`;

interface Backend {
  readonly name: string;
  /** `n` registries sharing one state: the replicas of one deployment (memory: one process, so one instance). */
  replicas(n: number): Promise<NonceRegistry[]>;
}

const backends: Backend[] = [
  {
    name: 'memory',
    replicas: async (n) => {
      const one = new MemoryNonceRegistry();
      return Array.from({ length: n }, () => one);
    },
  },
  {
    name: 'dynamodb',
    replicas: async (n) => {
      const settings = dynamo(uniqueName('nonces'));
      await initNonceTable(settings);
      // Separate registries, each with its own SDK client and connections: separate replicas.
      return Promise.all(Array.from({ length: n }, () => openNonceRegistry(settings)));
    },
  },
];

describe.each(backends)('nonce registry contract: $name', (backend) => {
  it('a nonce is fresh once, then used; other nonces are unaffected', async () => {
    const [r] = await backend.replicas(1);
    const now = Date.now();
    expect(await r!.consume(id(1), now + 35_000, now)).toBe('fresh');
    expect(await r!.consume(id(1), now + 35_000, now + 10)).toBe('used');
    expect(await r!.consume(id(2), now + 35_000, now + 10)).toBe('fresh');
    r!.close();
  });

  it('concurrent consumes of one nonce from several replicas: exactly one is fresh', async () => {
    const replicas = await backend.replicas(4);
    const now = Date.now();
    for (let round = 0; round < 5; round++) {
      const nonce = id(100 + round);
      // Every replica twice at once: 8 racing consumers.
      const uses: NonceUse[] = await Promise.all([...replicas, ...replicas].map((r) => r.consume(nonce, now + 35_000, now)));
      expect(uses.filter((u) => u === 'fresh'), `round ${round}: ${uses.join(',')}`).toHaveLength(1);
      expect(uses.filter((u) => u === 'used')).toHaveLength(7);
    }
    for (const r of new Set(replicas)) r.close();
  });
});

describe('DynamoDB nonce table', () => {
  it('initNonceTable is idempotent: creates the table once, enables TTL on the ttl attribute', async () => {
    const settings = dynamo(uniqueName('init'));
    expect(await initNonceTable(settings)).toEqual({ table: settings.table, created: true, ttlEnabled: true });
    expect(await initNonceTable(settings)).toEqual({ table: settings.table, created: false, ttlEnabled: true });
    const ddb = new DynamoDBClient(awsOf(moto));
    const ttl = await ddb.send(new DescribeTimeToLiveCommand({ TableName: settings.table }));
    expect(ttl.TimeToLiveDescription).toMatchObject({ TimeToLiveStatus: 'ENABLED', AttributeName: NONCE_TTL_ATTRIBUTE });
    ddb.destroy();
  });

  it('an item carries its TTL (epoch seconds of expiry + skew); moto never deletes expired items, so the value is checked, not the deletion', async () => {
    // DynamoDB deletes an item some time (up to days) after its TTL; moto does not delete TTL items at all.
    // Deletion is only housekeeping: an expired nonce is refused by ChallengeService before the table is asked.
    const settings = dynamo(uniqueName('ttl'));
    await initNonceTable(settings);
    const registry = new DynamoDbNonceRegistry(settings);
    const challenge = new ChallengeService(Buffer.alloc(32, 3), { ttlMs: 30_000, skewMs: 5_000 });
    const issuedAt = Date.now() - 40_000; // already past its lifetime and skew by the time of the read below
    const { nonce } = challenge.issue(issuedAt);
    const checked = challenge.check(nonce, issuedAt + 1_000);
    if (!checked.ok) expect.fail(checked.problem);
    expect(await registry.consume(checked.id, checked.rememberUntil, issuedAt + 1_000)).toBe('fresh');
    const ddb = new DynamoDBClient(awsOf(moto));
    const item = await ddb.send(new GetItemCommand({ TableName: settings.table, Key: { pk: { S: nonceItemKey(checked.id) } }, ConsistentRead: true }));
    expect(Number(item.Item?.[NONCE_TTL_ATTRIBUTE]?.N)).toBe(Math.ceil((issuedAt + 35_000 + NONCE_TTL_MARGIN_MS) / 1000));
    // After its lifetime the nonce is refused before the registry (so the lingering item never matters).
    expect(challenge.check(nonce, Date.now())).toEqual({ ok: false, problem: 'expired' });
    ddb.destroy();
    registry.close();
  });

  it('a replica whose clock is far behind still accepts a nonce after its lifetime in real time: the table keeps the item well past that (TTL margin), so a replay is still refused', async () => {
    // Found in review: the TTL was issue + lifetime + skew by the issuing replica's clock, so a replica 10 s
    // behind accepted the nonce after DynamoDB was entitled to delete the item, and a replay was "fresh".
    const settings = dynamo(uniqueName('skew'));
    await initNonceTable(settings);
    const registry = new DynamoDbNonceRegistry(settings);
    const ddb = new DynamoDBClient(awsOf(moto));
    try {
      const lag = 10_000;
      const challenge = new ChallengeService(Buffer.alloc(32, 4));
      const replicaNow = Date.now() - lag;
      const { nonce } = challenge.issue(replicaNow - 28_000);
      const first = challenge.check(nonce, replicaNow);
      if (!first.ok) expect.fail(first.problem);
      expect(await registry.consume(first.id, first.rememberUntil, replicaNow)).toBe('fresh');
      const key = { pk: { S: nonceItemKey(first.id) } };
      const item = await ddb.send(new GetItemCommand({ TableName: settings.table, Key: key, ConsistentRead: true }));
      // moto never deletes on TTL: do what DynamoDB may do, delete the item once its TTL has passed.
      if (Number(item.Item![NONCE_TTL_ATTRIBUTE]!.N) * 1000 < Date.now()) await ddb.send(new DeleteItemCommand({ TableName: settings.table, Key: key }));
      expect(challenge.check(nonce, Date.now() - lag).ok).toBe(true); // the lagging replica still accepts it...
      expect(await registry.consume(first.id, first.rememberUntil, Date.now() - lag)).toBe('used'); // ...so the table must still refuse a replay
    } finally {
      registry.close();
      ddb.destroy();
    }
  });

  it('unreachable DynamoDB, or a missing table: a coded NONCE_REGISTRY_UNAVAILABLE error, never fresh', async () => {
    const unreachable = new DynamoDbNonceRegistry(dynamo('nonces', { endpoint: `http://127.0.0.1:${await closedPort()}`, maxAttempts: 2 }));
    const err = await unreachable.consume(id(7), Date.now() + 35_000, Date.now()).then(
      (use) => expect.fail(`answered ${use}`),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NonceRegistryUnavailableError);
    expect((err as NonceRegistryUnavailableError).code).toBe('NONCE_REGISTRY_UNAVAILABLE');
    unreachable.close();
    const missing = new DynamoDbNonceRegistry(dynamo(uniqueName('never-created')));
    await expect(missing.consume(id(8), Date.now() + 35_000, Date.now())).rejects.toMatchObject({ code: 'NONCE_REGISTRY_UNAVAILABLE', registryError: 'ResourceNotFoundException' });
    missing.close();
  });
});

describe('DynamoDB throttling', () => {
  it('throttled on every attempt: the SDK retries within the deadline, then a coded error naming ThrottlingException (never fresh)', async () => {
    const throttling = await startThrottlingDynamoDb();
    const registry = new DynamoDbNonceRegistry(dynamo('nonces', { endpoint: throttling.endpoint, maxAttempts: 3 }));
    try {
      await expect(registry.consume(id(9), Date.now() + 35_000, Date.now())).rejects.toMatchObject({ code: 'NONCE_REGISTRY_UNAVAILABLE', registryError: 'ThrottlingException' });
      expect(throttling.calls()).toBe(3);
    } finally {
      registry.close();
      await throttling.close();
    }
  });
});

describe('config', () => {
  it('nonces defaults to memory; dynamodb needs a valid table; unknown settings are refused', () => {
    expect(resolveConfig({}).nonces).toEqual({ kind: 'memory' });
    expect(resolveConfig({ nonces: { kind: 'dynamodb', table: 'keygate-nonces', region: 'eu-west-1' } }).nonces).toMatchObject({ kind: 'dynamodb', table: 'keygate-nonces' });
    const bad: unknown[] = [{ kind: 'redis' }, { kind: 'dynamodb' }, { kind: 'dynamodb', table: 'a b' }, { kind: 'dynamodb', table: 'tbl', endpoint: 'ftp://x' }, { kind: 'memory', table: 'x' }, null];
    for (const nonces of bad) expect(() => resolveConfig({ nonces: nonces as never }), JSON.stringify(nonces)).toThrow(ConfigError);
  });

  it('a config file may not carry nonce-table credentials (the AWS SDK credential chain supplies them)', async () => {
    const file = join(tempDir(), 'broker.json');
    writeFileSync(file, JSON.stringify({ nonces: { kind: 'dynamodb', table: 'keygate-nonces', credentials: { accessKeyId: 'AKIA', secretAccessKey: 's' } } }));
    await expect(loadConfigFile(file)).rejects.toThrow(/nonces\.credentials is not allowed/);
    writeFileSync(file, JSON.stringify({ nonces: { kind: 'dynamodb', table: 'keygate-nonces', region: 'eu-west-1' } }));
    expect(resolveConfig(await loadConfigFile(file)).nonces).toEqual({ kind: 'dynamodb', table: 'keygate-nonces', region: 'eu-west-1' });
  });
});



describe('through real brokers', () => {
  it('DynamoDB unreachable: 503 STORE_UNAVAILABLE, nothing released, audited with the SDK error; a forged nonce never reaches the table', async () => {
    const dir = tempDir();
    const broker = await startTestBrokerWithDb(dir, [pki.root.pem], { nonces: dynamo('nonces', { endpoint: `http://127.0.0.1:${await closedPort()}`, maxAttempts: 2 }) });
    try {
      const enclave = new TestEnclave(pki, broker.url);
      const res = await enclave.request(['db']);
      expect(res.status).toBe(503);
      expect(res.body.error?.code).toBe('STORE_UNAVAILABLE');
      expect(res.body.secrets).toBeUndefined();
      // Junk is refused by the pure check before the registry: NONCE_MISMATCH, not the table's outage.
      const forged = await enclave.post(enclave.document(new Uint8Array(32).fill(9)), ['db']);
      expect([forged.status, forged.body.error?.code]).toEqual([401, 'NONCE_MISMATCH']);
    } finally {
      await broker.close();
    }
    const codes = auditCodesIn(dir);
    expect(codes).not.toContain('RELEASED');
    expect(codes.some((c) => c.startsWith('STORE_UNAVAILABLE:nonces:'))).toBe(true);
  });

  it('one document posted to two brokers sharing the challenge key and the nonce table: exactly one release', async () => {
    const settings = dynamo(uniqueName('replay'));
    await initNonceTable(settings);
    const shared = tempDir();
    const challengeKeyFile = join(shared, 'challenge.key');
    const [dirA, dirB] = [tempDir(), tempDir()];
    const a = await startTestBrokerWithDb(dirA, [pki.root.pem], { nonces: settings, challengeKeyFile });
    const b = await startTestBrokerWithDb(dirB, [pki.root.pem], { nonces: settings, challengeKeyFile });
    try {
      const enclave = new TestEnclave(pki, a.url);
      for (let round = 0; round < 3; round++) {
        const document = enclave.document(await enclave.challenge());
        const at = (url: string): TestEnclave => Object.assign(Object.create(Object.getPrototypeOf(enclave) as object) as TestEnclave, enclave, { url });
        // Both at once, and each replica twice: the race a replaying relay would run.
        const answers = await Promise.all([a.url, b.url, a.url, b.url].map((url) => at(url).post(document, ['db'])));
        const released = answers.filter((r) => r.status === 200);
        expect(released, `round ${round}: ${answers.map((r) => r.body.error?.code ?? r.status).join(',')}`).toHaveLength(1);
        expect(released[0]!.body.secrets?.map((s) => s.name)).toEqual(['db']);
        for (const r of answers.filter((x) => x.status !== 200)) expect(r.body.error?.code).toBe('NONCE_MISMATCH');
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
    const releases = [...auditCodesIn(dirA), ...auditCodesIn(dirB)].filter((c) => c === 'RELEASED');
    expect(releases).toHaveLength(3);
  });
});
