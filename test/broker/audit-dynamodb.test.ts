/**
 * The audit on DynamoDB (moto_server, an independent implementation of
 * DynamoDB): one chain per replica, group-committed transactions conditioned
 * on the chain head, takeover by a second process with the same replica id,
 * fail closed while the table is unreachable (503 at the HTTP level, nothing
 * released) and recovery, and `keygate audit verify --config` finding every
 * kind of tampering a table admin could do.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { DeleteItemCommand, DynamoDBClient, GetItemCommand, PutItemCommand, QueryCommand, TransactWriteItemsCommand } from '@aws-sdk/client-dynamodb';
import { DynamoDbAuditSink } from '../../broker/audit/dynamodb-sink.js';
import { DynamoDbChainReader, initAuditTable, type DynamoDbAuditSettings } from '../../broker/audit/dynamodb-chains.js';
import { verifyAuditChains, type ChainVerification } from '../../broker/audit/verify-chains.js';
import { chainPartition, headKey, recordKey } from '../../broker/audit/dynamodb-layout.js';
import { AuditUnavailableError, type DecisionRecord } from '../../broker/audit/sink.js';
import { loadConfigFile, resolveConfig } from '../../broker/config.js';
import { initSharedState } from '../../broker/state.js';
import { startTestBrokerWithDb } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { TestEnclave } from '../support/enclave.js';
import { cli } from '../support/cli.js';
import { awsOf, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { until } from '../support/poll.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let pki: TestPki;
let ddb: DynamoDBClient;
let savedEnv: NodeJS.ProcessEnv;
const table = uniqueName('keygate-audit');
const tempDir = tempDirs('keygate-audit-ddb-');

function newSigner(): { key: KeyObject; kid: string; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { key: privateKey, kid: 'test-kid', publicKey };
}
const signer = newSigner();

const settings = (extra: Partial<DynamoDbAuditSettings> = {}): DynamoDbAuditSettings => ({ kind: 'dynamodb', table, ...awsOf(moto), requestTimeoutMs: 10_000, ...extra });

const record = (nonce: string, code = 'RELEASED'): DecisionRecord => ({
  time: new Date().toISOString(),
  decision: code === 'RELEASED' ? 'release' : 'deny',
  code,
  secret: 'db',
  version: 1,
  moduleId: 'i-test',
  pcrs: null,
  docSha256: null,
  nonce,
  client: '127.0.0.1',
  latencyMs: 1,
});

/** A client counting its TransactWriteItems calls (and able to lose the answer of one that applied). */
function countingClient(): { client: DynamoDBClient; transactions: () => number; loseNextAnswer: () => void } {
  const client = new DynamoDBClient({ ...awsOf(moto), maxAttempts: 3 });
  let transactions = 0;
  let lose = false;
  client.middlewareStack.add(
    (next, context) => async (args) => {
      if (context.commandName !== 'TransactWriteItemsCommand') return next(args);
      transactions++;
      const out = await next(args);
      if (lose) {
        lose = false;
        // The transaction applied; the answer never reaches the broker (a timeout, a dropped connection).
        throw Object.assign(new Error('answer lost'), { name: 'TimeoutError' });
      }
      return out;
    },
    { step: 'initialize', name: 'countTransactions' },
  );
  return { client, transactions: () => transactions, loseNextAnswer: () => void (lose = true) };
}

/** A TCP relay to moto that can be cut (every connection dropped, new ones refused) and restored. */
async function relay(): Promise<{ endpoint: string; down: () => void; up: () => void; close: () => Promise<void> }> {
  const target = new URL(moto.endpoint);
  const sockets = new Set<Socket>();
  let cut = false;
  const server: Server = createServer((socket) => {
    if (cut) return socket.destroy();
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(socket).add(upstream);
    const drop = (): void => {
      socket.destroy();
      upstream.destroy();
      sockets.delete(socket);
      sockets.delete(upstream);
    };
    socket.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    socket.pipe(upstream).pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    down: () => {
      cut = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    up: () => void (cut = false),
    close: async () => {
      cut = true;
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

async function chainLines(chainId: string): Promise<string[]> {
  const reader = new DynamoDbChainReader(settings());
  try {
    const lines: string[] = [];
    for await (const line of reader.readLines(chainId)) lines.push(line);
    return lines;
  } finally {
    reader.close();
  }
}

async function verifyChain(chainId: string, key: KeyObject = signer.publicKey): Promise<ChainVerification> {
  const reader = new DynamoDbChainReader(settings());
  try {
    const result = await verifyAuditChains(reader, key);
    const chain = result.chains.find((c) => c.id === chainId);
    if (!chain) throw new Error(`chain ${chainId} not listed`);
    return chain;
  } finally {
    reader.close();
  }
}

const noncesIn = (lines: readonly string[]): string[] => lines.map((l) => JSON.parse(l) as { nonce?: string }).flatMap((r) => (r.nonce ? [r.nonce] : []));

const errorOf = async (p: Promise<unknown>): Promise<unknown> => p.then(() => undefined, (err: unknown) => err);

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
  ddb = new DynamoDBClient(awsOf(moto));
  expect(await initAuditTable(settings())).toMatch(new RegExp(`audit table ${table}: created, point-in-time recovery requested, no TTL`));
}, 90_000);
afterAll(async () => {
  ddb?.destroy();
  process.env = savedEnv;
  await moto?.stop();
});

describe('the DynamoDB audit sink', () => {
  it('group commit: concurrent appends share transactions (each sealed), and the chain verifies', async () => {
    const counting = countingClient();
    const sink = await DynamoDbAuditSink.open(settings({ maxBatchItems: 100 }), signer, { client: counting.client });
    await Promise.all(Array.from({ length: 200 }, (_, i) => sink.append(record(`gc-${i}`))));
    // 200 records, 98 per transaction (plus the seal and the head): 3 transactions, not 200.
    expect(counting.transactions()).toBeGreaterThanOrEqual(3);
    expect(counting.transactions()).toBeLessThanOrEqual(6);
    const chain = await verifyChain(sink.chainId);
    expect(chain).toMatchObject({ ok: true, records: { decisions: 200, seals: counting.transactions() } });
    expect(chain.head.seq).toBe(200 + counting.transactions());
    expect(new Set(noncesIn(await chainLines(sink.chainId))).size).toBe(200);
    await sink.close();
    counting.client.destroy();
  });

  it('splits a queue larger than maxBatchItems into consecutive sealed transactions', async () => {
    const counting = countingClient();
    const sink = await DynamoDbAuditSink.open(settings({ maxBatchItems: 10 }), signer, { client: counting.client });
    await Promise.all(Array.from({ length: 50 }, (_, i) => sink.append(record(`split-${i}`))));
    // 8 records per transaction (with the seal and the head: 10 items).
    expect(counting.transactions()).toBeGreaterThanOrEqual(7);
    expect(await verifyChain(sink.chainId)).toMatchObject({ ok: true, records: { decisions: 50, seals: counting.transactions() } });
    await sink.close();
    counting.client.destroy();
  });

  it('a fresh chain per start without a replicaId; with one, the chain continues across restarts', async () => {
    const a = await DynamoDbAuditSink.open(settings(), signer);
    const b = await DynamoDbAuditSink.open(settings(), signer);
    expect(a.chainId).not.toBe(b.chainId);
    expect(a.chainId).toMatch(/^[A-Za-z0-9._-]{1,64}$/);
    await Promise.all([a.close(), b.close()]);

    const replicaId = uniqueName('replica');
    const first = await DynamoDbAuditSink.open(settings({ replicaId }), signer);
    await Promise.all([first.append(record('r-1')), first.append(record('r-2'))]);
    await first.close();
    const second = await DynamoDbAuditSink.open(settings({ replicaId }), signer);
    expect(second.chainId).toBe(replicaId);
    await second.append(record('r-3'));
    await second.close();
    expect(noncesIn(await chainLines(replicaId))).toEqual(['r-1', 'r-2', 'r-3']);
    expect(await verifyChain(replicaId)).toMatchObject({ ok: true, records: { decisions: 3, seals: 2 } });
  });

  it('takeover: a second process with the same replicaId takes the chain over; the first stops, nothing it acknowledged is lost', async () => {
    const replicaId = uniqueName('takeover');
    const first = await DynamoDbAuditSink.open(settings({ replicaId }), signer);
    await first.append(record('first-0'));
    // The first keeps writing while the second takes over.
    const acknowledged: string[] = ['first-0'];
    let writing = true;
    const writer = (async () => {
      for (let i = 1; writing && i < 500; i++) {
        const ok = await first.append(record(`first-${i}`)).then(() => true, (err: unknown) => (expect(err).toMatchObject({ code: 'AUDIT_UNAVAILABLE' }), false));
        if (ok) acknowledged.push(`first-${i}`);
        else break;
      }
    })();
    await until('the first writer to commit a few batches', () => acknowledged.length >= 3);
    const second = await DynamoDbAuditSink.open(settings({ replicaId }), signer);
    await second.append(record('second-0'));
    await until('the first writer to notice the takeover', () => !first.healthy);
    writing = false;
    await writer;
    expect(await errorOf(first.append(record('first-late')))).toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    await second.append(record('second-1'));
    const nonces = noncesIn(await chainLines(replicaId));
    for (const n of acknowledged) expect(nonces).toContain(n);
    expect(nonces).not.toContain('first-late');
    expect(nonces.slice(-2)).toEqual(['second-0', 'second-1']);
    expect((await verifyChain(replicaId)).ok).toBe(true);
    await Promise.all([first.close(), second.close()]);
  });

  it('fails closed with AUDIT_UNAVAILABLE while the table is unreachable, and recovers when it is back', async () => {
    const r = await relay();
    try {
      const sink = await DynamoDbAuditSink.open(settings({ endpoint: r.endpoint, maxAttempts: 2, requestTimeoutMs: 3_000 }), signer, { retryMs: 100 });
      await sink.append(record('before'));
      r.down();
      const err = await errorOf(sink.append(record('during')));
      expect(err).toBeInstanceOf(AuditUnavailableError);
      expect(err).toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
      expect(sink.healthy).toBe(false);
      // Fails fast while unhealthy: nothing is queued behind the failure.
      expect(await errorOf(sink.append(record('still-down')))).toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
      r.up();
      await until('the sink to recover', () => sink.healthy);
      await sink.append(record('after'));
      const nonces = noncesIn(await chainLines(sink.chainId));
      expect(nonces).toContain('before');
      expect(nonces).toContain('after');
      expect(nonces).not.toContain('still-down');
      expect((await verifyChain(sink.chainId)).ok).toBe(true);
      await sink.close();
    } finally {
      await r.close();
    }
  });

  it('a transaction that applied although its answer was lost: the client was told failure, the chain continues from the true head', async () => {
    const counting = countingClient();
    const sink = await DynamoDbAuditSink.open(settings(), signer, { client: counting.client, retryMs: 50 });
    await sink.append(record('a'));
    counting.loseNextAnswer();
    expect(await errorOf(sink.append(record('in-doubt')))).toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    await until('the sink to recover', () => sink.healthy);
    expect(sink.head.seq).toBe(4); // a + seal, in-doubt + seal: the applied batch was adopted
    await sink.append(record('b'));
    expect(noncesIn(await chainLines(sink.chainId))).toEqual(['a', 'in-doubt', 'b']);
    expect((await verifyChain(sink.chainId)).ok).toBe(true);
    await sink.close();
    counting.client.destroy();
  });
});

describe('the DynamoDB audit sink refuses to write over what it did not write', () => {
  it('a record planted after the head: the append is refused and the sink stops for good (no endless retry, no overwrite)', async () => {
    const logged: string[] = [];
    const sink = await DynamoDbAuditSink.open(settings(), signer, { retryMs: 50, log: (_level, message) => void logged.push(message) });
    await sink.append(record('mine'));
    const planted = recordKey(sink.chainId, sink.head.seq + 1);
    await ddb.send(new PutItemCommand({ TableName: table, Item: { pk: { S: planted.pk }, sk: { S: planted.sk }, line: { S: '{"planted":true}' } } }));
    expect(await errorOf(sink.append(record('refused')))).toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    await until('the sink to stop', () => logged.some((m) => /abandoned/.test(m)));
    expect(sink.healthy).toBe(false);
    expect(await errorOf(sink.append(record('after')))).toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    const lines = await chainLines(sink.chainId);
    expect(lines.at(-1)).toBe('{"planted":true}');
    expect(noncesIn(lines)).toEqual(['mine']);
    await sink.close();
  });
});

describe('verifying the chains', () => {
  /** A chain of three batches (2, 2 and 1 decisions), seq 1..8. */
  async function chainOf3Batches(): Promise<string> {
    const replicaId = uniqueName('v');
    const sink = await DynamoDbAuditSink.open(settings({ replicaId }), signer);
    await Promise.all([sink.append(record('v1')), sink.append(record('v2'))]);
    await Promise.all([sink.append(record('v3')), sink.append(record('v4'))]);
    await sink.append(record('v5'));
    await sink.close();
    expect((await verifyChain(replicaId)).ok).toBe(true);
    return replicaId;
  }
  const del = (id: string, seq: number): Promise<unknown> => ddb.send(new DeleteItemCommand({ TableName: table, Key: { pk: { S: recordKey(id, seq).pk }, sk: { S: recordKey(id, seq).sk } } }));

  it('an edited record line', async () => {
    const id = await chainOf3Batches();
    const key = recordKey(id, 4);
    const item = (await ddb.send(new GetItemCommand({ TableName: table, Key: { pk: { S: key.pk }, sk: { S: key.sk } } }))).Item!;
    await ddb.send(new PutItemCommand({ TableName: table, Item: { ...item, line: { S: item.line!.S!.replace('"decision":"release"', '"decision":"deny"') } } }));
    expect(await verifyChain(id)).toMatchObject({ ok: false, records: { problem: { kind: 'tampered', seq: 5 } } });
  });

  it('a record deleted in the middle', async () => {
    const id = await chainOf3Batches();
    await del(id, 2);
    expect(await verifyChain(id)).toMatchObject({ ok: false, records: { problem: { kind: 'tampered', message: expect.stringMatching(/dropped/) } } });
  });

  it('records deleted at the tail (a whole batch): the head is ahead of the records', async () => {
    const id = await chainOf3Batches();
    await del(id, 8);
    await del(id, 7);
    const chain = await verifyChain(id);
    // The remaining records are a valid sealed chain: only the head item shows what was deleted.
    expect(chain.records.ok).toBe(true);
    expect(chain).toMatchObject({ ok: false, headProblem: { kind: 'head-ahead' } });
  });

  it('records beyond the head (written outside the broker, or the head rolled back)', async () => {
    const id = await chainOf3Batches();
    const key = headKey(id);
    await ddb.send(new PutItemCommand({ TableName: table, Item: { ...(await ddb.send(new GetItemCommand({ TableName: table, Key: { pk: { S: key.pk }, sk: { S: key.sk } } }))).Item!, seq: { N: '6' } } }));
    expect(await verifyChain(id)).toMatchObject({ ok: false, headProblem: { kind: 'records-beyond-head' } });
  });

  it('a chain copied under another id does not verify (its genesis is its id)', async () => {
    const id = await chainOf3Batches();
    const copy = uniqueName('copy');
    const items = (await ddb.send(new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: chainPartition(id) } } }))).Items!;
    const head = (await ddb.send(new GetItemCommand({ TableName: table, Key: { pk: { S: headKey(id).pk }, sk: { S: headKey(id).sk } } }))).Item!;
    await ddb.send(
      new TransactWriteItemsCommand({
        TransactItems: [...items.map((i) => ({ Put: { TableName: table, Item: { ...i, pk: { S: chainPartition(copy) } } } })), { Put: { TableName: table, Item: { ...head, sk: { S: copy } } } }],
      }),
    );
    expect(await verifyChain(copy)).toMatchObject({ ok: false, records: { problem: { kind: 'tampered', seq: 1 } } });
    expect((await verifyChain(id)).ok).toBe(true);
  });

  it('seals signed by another key', async () => {
    const replicaId = uniqueName('otherkey');
    const sink = await DynamoDbAuditSink.open(settings({ replicaId }), newSigner());
    await sink.append(record('x'));
    await sink.close();
    expect(await verifyChain(replicaId)).toMatchObject({ ok: false, records: { problem: { kind: 'tampered', message: expect.stringMatching(/seal signature/) } } });
  });

  it('keygate audit verify --config: every chain, the key from the state directory, exit 1 on any failure, --json', async () => {
    const auditTable = uniqueName('keygate-audit-cli');
    const dir = tempDir();
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ stateDir: 'state', audit: { kind: 'dynamodb', table: auditTable } }));
    // keygate store init creates the audit table, idempotently.
    const resolved = resolveConfig(await loadConfigFile(config));
    expect(await initSharedState(resolved)).toContain(`audit table ${auditTable}: created, point-in-time recovery requested, no TTL`);
    expect(await initSharedState(resolved)).toContain(`audit table ${auditTable}: exists, point-in-time recovery requested, no TTL`);
    const empty = await cli(['audit', 'verify', '--config', config, '--no-signatures']);
    expect([empty.status, empty.stdout]).toEqual([1, expect.stringMatching(/holds no chains/)]);

    // A broker on this config writes its chain (and creates the signing key file the verifier then finds).
    const broker = await startTestBrokerWithDb(dir, [pki.root.pem], { audit: resolved.audit, stateDir: resolved.stateDir });
    let chainId: string;
    try {
      const res = await new TestEnclave(pki, broker.url).request(['db']);
      expect(res.status).toBe(200);
      chainId = (broker.audit as DynamoDbAuditSink).chainId;
    } finally {
      await broker.close();
    }
    const ok = await cli(['audit', 'verify', '--config', config]);
    expect(ok.status, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/broker key: key file .*broker-signing-key\.jwk/);
    expect(ok.stdout).toMatch(new RegExp(`chain ${chainId}: intact: 1 decisions, 0 refusal summaries, 1 seals \\(signatures verified\\)`));
    expect(ok.stdout).toMatch(/audit chains intact: 1 chain\(s\)/);
    const json = await cli(['audit', 'verify', '--config', config, '--json']);
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, table: auditTable, key: { sealsVerified: true }, chains: [{ id: chainId, ok: true }] });

    // A tail batch deleted: exit 1, and the output says what is wrong.
    const lines = (await ddb.send(new QueryCommand({ TableName: auditTable, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: chainPartition(chainId) } } }))).Items!;
    for (const item of lines) await ddb.send(new DeleteItemCommand({ TableName: auditTable, Key: { pk: item.pk!, sk: item.sk! } }));
    const bad = await cli(['audit', 'verify', '--config', config]);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(new RegExp(`chain ${chainId}: HEAD AHEAD OF THE RECORDS`));
    expect(bad.stdout).toMatch(/audit chains NOT VERIFIED: 1 of 1 chain\(s\) failed/);
    const badJson = await cli(['audit', 'verify', '--config', config, '--json']);
    expect(badJson.status).toBe(1);
    expect(JSON.parse(badJson.stdout)).toMatchObject({ ok: false, chains: [{ id: chainId, ok: false, headProblem: { kind: 'head-ahead' } }] });
  });
});

describe('keygate audit verify --config with the shared keys on DynamoDB', () => {
  it('takes the broker key from the signing-key item (KMS decrypt) and says so', async () => {
    const kms = new KMSClient(awsOf(moto));
    const created = await kms.send(new CreateKeyCommand({ Description: 'keygate audit test' }));
    kms.destroy();
    const auditTable = uniqueName('keygate-audit-kms');
    const keysTable = uniqueName('keygate-keys');
    const dir = tempDir();
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ stateDir: 'state', audit: { kind: 'dynamodb', table: auditTable }, keys: { kind: 'dynamodb', table: keysTable, kmsKeyId: created.KeyMetadata!.KeyId! } }));
    const resolved = resolveConfig(await loadConfigFile(config));
    await initSharedState(resolved);
    await initAuditTable({ kind: 'dynamodb', table: keysTable }); // any pk + sk table holds the key items
    const broker = await startTestBrokerWithDb(dir, [pki.root.pem], { audit: resolved.audit, keys: resolved.keys, stateDir: resolved.stateDir });
    let chainId: string;
    try {
      expect((await new TestEnclave(pki, broker.url).request(['db'])).status).toBe(200);
      chainId = (broker.audit as DynamoDbAuditSink).chainId;
    } finally {
      await broker.close();
    }
    const run = await cli(['audit', 'verify', '--config', config]);
    expect(run.status, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`broker key: shared keys in DynamoDB table ${keysTable} \\(KMS decrypt under ${created.KeyMetadata!.KeyId!}, kid ${broker.signingKey.kid}\\)`));
    expect(run.stdout).toMatch(new RegExp(`chain ${chainId}: intact`));
  });
});

describe('a broker with its audit on DynamoDB', () => {
  it('a release is recorded in its chain; with the table unreachable nothing is released (503 STORE_UNAVAILABLE) and it is not ready; it recovers', async () => {
    const r = await relay();
    const dir = tempDir();
    const audit = settings({ endpoint: r.endpoint, maxAttempts: 2, requestTimeoutMs: 3_000 });
    const broker = await startTestBrokerWithDb(dir, [pki.root.pem], { audit });
    try {
      const sink = broker.audit as DynamoDbAuditSink;
      const enclave = new TestEnclave(pki, broker.url);
      const res = await enclave.request(['db']);
      expect(res.status).toBe(200);
      const released = (await chainLines(sink.chainId)).map((l) => JSON.parse(l) as { type: string; code?: string; secret?: string });
      expect(released.filter((l) => l.type === 'decision')).toMatchObject([{ code: 'RELEASED', secret: 'db' }]);

      r.down();
      const refused = await enclave.request(['db']);
      expect([refused.status, refused.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']);
      expect(refused.body.secrets).toBeUndefined();
      expect((await fetch(`${broker.url}/readyz`)).status).toBe(503);

      r.up();
      await until('the broker to be ready again', async () => (await fetch(`${broker.url}/readyz`)).status === 200);
      expect((await enclave.request(['db'])).status).toBe(200);
      const chain = await verifyChain(sink.chainId, broker.signingKey.publicKey);
      expect(chain).toMatchObject({ ok: true });
      expect(chain.records.decisions).toBeGreaterThanOrEqual(2);
    } finally {
      await broker.close();
      await r.close();
    }
  });
});
