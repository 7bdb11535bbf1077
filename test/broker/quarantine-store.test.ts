/**
 * The quarantine store: one contract, two implementations (in memory: per
 * broker; DynamoDB: shared by every replica), the DynamoDB one against
 * moto_server (an independent implementation of DynamoDB), and the promise
 * "quarantined on one replica is quarantined on all" through real brokers
 * sharing one table.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DescribeTimeToLiveCommand, DynamoDBClient, GetItemCommand, PutItemCommand, type AttributeValue } from '@aws-sdk/client-dynamodb';
import { DynamoDbQuarantine, QUARANTINE_TTL_ATTRIBUTE, quarantineItemKey, type DynamoDbQuarantineSettings } from '../../broker/quarantine/dynamodb-quarantine.js';
import { initQuarantineTable, openQuarantine, type OpenedQuarantine } from '../../broker/quarantine/open-quarantine.js';
import { QuarantineUnavailableError, type QuarantineLimits } from '../../broker/quarantine/store.js';
import { ConfigError, loadConfigFile, resolveConfig } from '../../broker/config.js';
import { initSharedState } from '../../broker/state.js';
import { NO_RATE_LIMITS, startTestBrokerWithDb, auditCodesIn } from '../support/broker.js';
import { awsOf, closedPort, motoTable, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { startThrottlingDynamoDb } from '../support/dynamodb-throttle.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { TestEnclave } from '../support/enclave.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let pki: TestPki;
const tempDir = tempDirs('keygate-quarantine-');

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
});
afterAll(async () => {
  await moto?.stop();
});

const dynamo = (table: string, extra: Partial<DynamoDbQuarantineSettings> = {}): DynamoDbQuarantineSettings => motoTable(moto, table, extra);


const SECOND = 1_000;
const HOUR = 3_600_000;
/** threshold 3 within 60 s, quarantined for 300 s. */
const LIMITS: QuarantineLimits = { threshold: 3, windowMs: 60 * SECOND, quarantineMs: 300 * SECOND };

interface Backend {
  readonly name: string;
  /** `n` quarantine stores sharing one state: the replicas of one deployment (memory: one process, so one instance). */
  replicas(n: number, limits?: QuarantineLimits): Promise<OpenedQuarantine[]>;
}

const backends: Backend[] = [
  {
    name: 'memory',
    replicas: async (n, limits = LIMITS) => {
      const one = await openQuarantine({ kind: 'memory' }, limits);
      return Array.from({ length: n }, () => one);
    },
  },
  {
    name: 'dynamodb',
    replicas: async (n, limits = LIMITS) => {
      const settings = dynamo(uniqueName('quarantine'));
      await initQuarantineTable(settings);
      // Separate stores, each with its own SDK client and connections: separate replicas.
      return Promise.all(Array.from({ length: n }, () => openQuarantine(settings, limits)));
    },
  },
];

describe.each(backends)('quarantine contract: $name', (backend) => {
  it('threshold denials within the window quarantine the identity, fewer do not; other identities are unaffected', async () => {
    const [q] = await backend.replicas(1);
    const t = Date.now();
    await q!.recordDenial('id-a', t);
    await q!.recordDenial('id-a', t + SECOND);
    expect(await q!.isQuarantined('id-a', t + 2 * SECOND)).toBe(false);
    await q!.recordDenial('id-a', t + 2 * SECOND);
    expect(await q!.isQuarantined('id-a', t + 3 * SECOND)).toBe(true);
    expect(await q!.isQuarantined('id-b', t + 3 * SECOND)).toBe(false);
    q!.close();
  });

  it('the window slides: denials older than the window do not count, recent ones still do', async () => {
    const [q] = await backend.replicas(1);
    const t = Date.now();
    await q!.recordDenial('id', t);
    await q!.recordDenial('id', t + 59 * SECOND);
    await q!.recordDenial('id', t + 61 * SECOND); // the first has left the window: 2 within it
    expect(await q!.isQuarantined('id', t + 61 * SECOND)).toBe(false);
    await q!.recordDenial('id', t + 62 * SECOND); // 59, 61, 62: 3 within 60 s
    expect(await q!.isQuarantined('id', t + 62 * SECOND)).toBe(true);
    q!.close();
  });

  it('a quarantine lasts its length, then ends', async () => {
    const [q] = await backend.replicas(1);
    const t = Date.now();
    for (let i = 0; i < 3; i++) await q!.recordDenial('id', t);
    expect(await q!.isQuarantined('id', t + 299 * SECOND)).toBe(true);
    expect(await q!.isQuarantined('id', t + 300 * SECOND)).toBe(false);
    q!.close();
  });

  it('a wall clock stepped back does not stretch a quarantine beyond its length from now', async () => {
    const [q] = await backend.replicas(1);
    const t = Date.now();
    for (let i = 0; i < 3; i++) await q!.recordDenial('id', t);
    expect(await q!.isQuarantined('id', t + SECOND)).toBe(true);
    const back = t - HOUR;
    expect(await q!.isQuarantined('id', back)).toBe(true); // still quarantined, for at most its length from now
    expect(await q!.isQuarantined('id', back + 300 * SECOND - 1)).toBe(true);
    expect(await q!.isQuarantined('id', back + 300 * SECOND + 1)).toBe(false);
    q!.close();
  });

  it('threshold 0 disables the quarantine', async () => {
    const [q] = await backend.replicas(1, { ...LIMITS, threshold: 0 });
    const t = Date.now();
    for (let i = 0; i < 5; i++) await q!.recordDenial('id', t);
    expect(await q!.isQuarantined('id', t)).toBe(false);
    q!.close();
  });

  it('denials recorded on several replicas add up: the sum reaches the threshold and every replica sees the quarantine', async () => {
    const [a, b] = await backend.replicas(2);
    const t = Date.now();
    await a!.recordDenial('id', t);
    await b!.recordDenial('id', t + SECOND);
    expect(await a!.isQuarantined('id', t + 2 * SECOND)).toBe(false);
    expect(await b!.isQuarantined('id', t + 2 * SECOND)).toBe(false);
    await a!.recordDenial('id', t + 2 * SECOND);
    expect(await a!.isQuarantined('id', t + 3 * SECOND)).toBe(true);
    expect(await b!.isQuarantined('id', t + 3 * SECOND)).toBe(true);
    for (const q of new Set([a!, b!])) q.close();
  });

  it('concurrent denials from several replicas are all counted (none overwrites another)', async () => {
    // 4 replicas, 2 denials each, all at once: 8 counted. Threshold 9 is not reached, threshold 8 is.
    for (const [threshold, expected] of [[9, false], [8, true]] as const) {
      const replicas = await backend.replicas(4, { ...LIMITS, threshold });
      const t = Date.now();
      await Promise.all([...replicas, ...replicas].map((q, i) => q.recordDenial('id', t + i)));
      expect(await Promise.all(replicas.map((q) => q.isQuarantined('id', t + 10))), `threshold ${threshold}`).toEqual(replicas.map(() => expected));
      for (const q of new Set(replicas)) q.close();
    }
  });
});

describe('DynamoDB quarantine table', () => {
  it('initQuarantineTable is idempotent: creates the table once, enables TTL on the ttl attribute', async () => {
    const settings = dynamo(uniqueName('init'));
    expect(await initQuarantineTable(settings)).toEqual({ table: settings.table, created: true, ttlEnabled: true });
    expect(await initQuarantineTable(settings)).toEqual({ table: settings.table, created: false, ttlEnabled: true });
    const ddb = new DynamoDBClient(awsOf(moto));
    const ttl = await ddb.send(new DescribeTimeToLiveCommand({ TableName: settings.table }));
    expect(ttl.TimeToLiveDescription).toMatchObject({ TimeToLiveStatus: 'ENABLED', AttributeName: QUARANTINE_TTL_ATTRIBUTE });
    ddb.destroy();
  });

  it('keygate store init (initSharedState) creates the quarantine table when quarantine is on DynamoDB', async () => {
    const settings = dynamo(uniqueName('store-init'));
    const config = resolveConfig({ store: join(tempDir(), 'store'), stateDir: join(tempDir(), 'state'), quarantine: settings });
    expect(await initSharedState(config)).toContain(`quarantine table ${settings.table}: created, TTL enabled`);
    expect(await initSharedState(config)).toContain(`quarantine table ${settings.table}: exists, TTL enabled`);
  });

  it('one item per identity (pk quarantine#<identity>) with a bounded denial list and a TTL; moto never deletes expired items, so the value is checked', async () => {
    const settings = dynamo(uniqueName('item'));
    await initQuarantineTable(settings);
    const q = new DynamoDbQuarantine(settings, { ...LIMITS, threshold: 4 });
    const t = Date.now();
    for (let i = 0; i < 3; i++) await q.recordDenial('pcr0|i-1', t + i * 30 * SECOND); // the first leaves the window at the third
    const ddb = new DynamoDBClient(awsOf(moto));
    const read = async () => (await ddb.send(new GetItemCommand({ TableName: settings.table, Key: { pk: { S: quarantineItemKey('pcr0|i-1') } }, ConsistentRead: true }))).Item!;
    let item = await read();
    expect(item.denials?.L?.map((v) => Number(v.N))).toEqual([t + 30 * SECOND, t + 60 * SECOND]);
    expect(Number(item[QUARANTINE_TTL_ATTRIBUTE]?.N)).toBe(Math.ceil((t + 120 * SECOND) / 1000));
    expect(item.until).toBeUndefined();
    for (let i = 0; i < 2; i++) await q.recordDenial('pcr0|i-1', t + 61 * SECOND);
    item = await read();
    // Quarantined: the end is stored, the denials that led to it are dropped (as the in-memory one does), and the
    // item lives until the quarantine ends.
    expect(Number(item.until?.N)).toBe(t + 361 * SECOND);
    expect(item.denials?.L).toEqual([]);
    expect(Number(item[QUARANTINE_TTL_ATTRIBUTE]?.N)).toBe(Math.ceil((t + 361 * SECOND) / 1000));
    ddb.destroy();
    q.close();
  });

  it('unreachable DynamoDB, a missing table or a malformed item: a coded QUARANTINE_UNAVAILABLE error, never "not quarantined"', async () => {
    const unreachable = new DynamoDbQuarantine(dynamo('quarantine', { endpoint: `http://127.0.0.1:${await closedPort()}`, maxAttempts: 2 }), LIMITS);
    const err = await unreachable.isQuarantined('id', Date.now()).then(
      (answer) => expect.fail(`answered ${answer}`),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(QuarantineUnavailableError);
    expect((err as QuarantineUnavailableError).code).toBe('QUARANTINE_UNAVAILABLE');
    await expect(unreachable.recordDenial('id', Date.now())).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE' });
    unreachable.close();
    const missing = new DynamoDbQuarantine(dynamo(uniqueName('never-created')), LIMITS);
    await expect(missing.isQuarantined('id', Date.now())).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE', storeError: 'ResourceNotFoundException' });
    missing.close();
    const settings = dynamo(uniqueName('malformed'));
    await initQuarantineTable(settings);
    const ddb = new DynamoDBClient(awsOf(moto));
    await ddb.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: quarantineItemKey('id') }, until: { S: 'forever' } } }));
    ddb.destroy();
    const q = new DynamoDbQuarantine(settings, LIMITS);
    await expect(q.isQuarantined('id', Date.now())).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE', storeError: 'MalformedItem' });
    // A well-versioned item whose fields have another type is not read as "no quarantine" either.
    const typed = new DynamoDBClient(awsOf(moto));
    const wrongTypes: Array<Record<string, AttributeValue>> = [
      { until: { S: String(Date.now() + HOUR) } },
      { until: { NS: [String(Date.now() + HOUR)] } },
      { denials: { SS: ['1', '2'] } },
      { denials: { L: [{ S: '1' }] } },
    ];
    for (const [i, fields] of wrongTypes.entries()) {
      const id = `typed-${i}`;
      await typed.send(new PutItemCommand({ TableName: settings.table, Item: { pk: { S: quarantineItemKey(id) }, v: { N: '1' }, ...fields } }));
      await expect(q.isQuarantined(id, Date.now()), JSON.stringify(fields)).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE', storeError: 'MalformedItem' });
    }
    typed.destroy();
    q.close();
  });

  it('throttled on every attempt: the SDK retries, then a coded error naming ThrottlingException', async () => {
    const throttling = await startThrottlingDynamoDb();
    const q = new DynamoDbQuarantine(dynamo('quarantine', { endpoint: throttling.endpoint, maxAttempts: 3 }), LIMITS);
    try {
      await expect(q.isQuarantined('id', Date.now())).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE', storeError: 'ThrottlingException' });
      expect(throttling.calls()).toBe(3);
    } finally {
      q.close();
      await throttling.close();
    }
  });
});

describe('config', () => {
  it('quarantine defaults to memory; dynamodb needs a valid table; unknown settings are refused', () => {
    expect(resolveConfig({}).quarantine).toEqual({ kind: 'memory' });
    expect(resolveConfig({ quarantine: { kind: 'dynamodb', table: 'keygate-quarantine', region: 'eu-west-1' } }).quarantine).toMatchObject({ kind: 'dynamodb', table: 'keygate-quarantine' });
    const bad: unknown[] = [{ kind: 'redis' }, { kind: 'dynamodb' }, { kind: 'dynamodb', table: 'a b' }, { kind: 'dynamodb', table: 'tbl', endpoint: 'ftp://x' }, { kind: 'dynamodb', table: 'tbl', maxAttempts: 0 }, { kind: 'memory', table: 'x' }, { kind: 'toString' }, null];
    for (const quarantine of bad) expect(() => resolveConfig({ quarantine: quarantine as never }), JSON.stringify(quarantine)).toThrow(ConfigError);
  });

  it('a config file may not carry quarantine-table credentials (the AWS SDK credential chain supplies them)', async () => {
    const file = join(tempDir(), 'broker.json');
    writeFileSync(file, JSON.stringify({ quarantine: { kind: 'dynamodb', table: 'keygate-quarantine', credentials: { accessKeyId: 'AKIA', secretAccessKey: 's' } } }));
    await expect(loadConfigFile(file)).rejects.toThrow(/quarantine\.credentials is not allowed/);
    writeFileSync(file, JSON.stringify({ quarantine: { kind: 'dynamodb', table: 'keygate-quarantine', region: 'eu-west-1' } }));
    expect(resolveConfig(await loadConfigFile(file)).quarantine).toEqual({ kind: 'dynamodb', table: 'keygate-quarantine', region: 'eu-west-1' });
  });
});



describe('through real brokers', () => {
  it('denials spread over two brokers sharing the quarantine table quarantine the identity on both', async () => {
    const settings = dynamo(uniqueName('replicas'));
    await initQuarantineTable(settings);
    const challengeKeyFile = join(tempDir(), 'challenge.key');
    const rateLimits = { ...NO_RATE_LIMITS, quarantineAfterDenials: 4, quarantineWindowSeconds: 600, quarantineSeconds: 600 };
    const [dirA, dirB] = [tempDir(), tempDir()];
    const a = await startTestBrokerWithDb(dirA, [pki.root.pem], { quarantine: settings, challengeKeyFile, rateLimits });
    const b = await startTestBrokerWithDb(dirB, [pki.root.pem], { quarantine: settings, challengeKeyFile, rateLimits });
    try {
      const [atA, atB] = [new TestEnclave(pki, a.url), new TestEnclave(pki, b.url)];
      // 3 denials, spread: below the threshold everywhere (each broker alone has seen at most 2).
      for (const [i, enclave] of [atA, atB, atA].entries()) expect((await enclave.request([`probe-${i}`])).body.error?.code).toBe('POLICY_DENIED');
      expect((await atB.request(['db'])).status).toBe(200);
      // The 4th, on B: the sum reaches the threshold. Both brokers refuse the identity, even for what it may read.
      expect((await atB.request(['probe-3'])).body.error?.code).toBe('POLICY_DENIED');
      for (const enclave of [atA, atB]) {
        const blocked = await enclave.request(['db']);
        expect([blocked.status, blocked.body.error?.code, blocked.body.secrets]).toEqual([429, 'QUARANTINED', undefined]);
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
    expect(auditCodesIn(dirA)).toContain('QUARANTINED');
    expect(auditCodesIn(dirB)).toContain('QUARANTINED');
  });

  it('quarantine table unreachable: 503 STORE_UNAVAILABLE, nothing released, audited with the SDK error', async () => {
    const dir = tempDir();
    const broker = await startTestBrokerWithDb(dir, [pki.root.pem], { quarantine: dynamo('quarantine', { endpoint: `http://127.0.0.1:${await closedPort()}`, maxAttempts: 2 }) });
    try {
      const res = await new TestEnclave(pki, broker.url).request(['db']);
      expect(res.status).toBe(503);
      expect(res.body.error?.code).toBe('STORE_UNAVAILABLE');
      expect(res.body.secrets).toBeUndefined();
    } finally {
      await broker.close();
    }
    const codes = auditCodesIn(dir);
    expect(codes).not.toContain('RELEASED');
    expect(codes.some((c) => c.startsWith('STORE_UNAVAILABLE:quarantine:'))).toBe(true);
  });
});
