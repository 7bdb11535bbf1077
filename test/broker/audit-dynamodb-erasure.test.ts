/**
 * Regression tests from an adversarial review of the DynamoDB audit (moto_server):
 * erasure a table admin can do and what `audit verify --config` must say about it,
 * a chain too long to hold as one string, readiness reflecting the audit table,
 * a sink that must not call itself healthy while no write can succeed, and a
 * reader whose pagination a broken endpoint cannot turn into an endless loop.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { DeleteItemCommand, DynamoDBClient, GetItemCommand, QueryCommand, UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { DynamoDbAuditSink } from '../../broker/audit/dynamodb-sink.js';
import { DynamoDbChainReader, initAuditTable, type DynamoDbAuditSettings } from '../../broker/audit/dynamodb-chains.js';
import { verifyAuditChains, type ChainsVerification } from '../../broker/audit/verify-chains.js';
import { chainPartition, headKey, recordKey } from '../../broker/audit/dynamodb-layout.js';
import { chainBatch, chainGenesis, lineHash, type AuditChainReader } from '../../broker/audit/chain.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import { AuditLog } from '../../broker/audit/log.js';
import type { Logger } from '../../broker/log.js';
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
const tempDir = tempDirs('keygate-audit-erasure-');
const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const signer = { key: privateKey, kid: 'erasure' };

/** A fresh table per test: verification is over every chain of a table. */
async function newTable(): Promise<string> {
  const table = uniqueName('kg-erase');
  await initAuditTable({ kind: 'dynamodb', table, ...awsOf(moto) });
  return table;
}
const settings = (table: string, extra: Partial<DynamoDbAuditSettings> = {}): DynamoDbAuditSettings => ({ kind: 'dynamodb', table, ...awsOf(moto), requestTimeoutMs: 10_000, ...extra });

const record = (nonce: string): DecisionRecord => ({
  time: new Date().toISOString(),
  decision: 'release',
  code: 'RELEASED',
  secret: 'db',
  version: 1,
  moduleId: 'i-test',
  pcrs: null,
  docSha256: null,
  nonce,
  client: '127.0.0.1',
  latencyMs: 1,
});

async function verifyTable(table: string, key: KeyObject = publicKey): Promise<ChainsVerification> {
  const reader = new DynamoDbChainReader(settings(table));
  try {
    return await verifyAuditChains(reader, key);
  } finally {
    reader.close();
  }
}

/** A chain of batches [2 decisions], [2 decisions], [1 decision]: seq 1..8 (seals at 3, 6, 8). */
async function chainOf3Batches(table: string, replicaId = uniqueName('r')): Promise<string> {
  const sink = await DynamoDbAuditSink.open(settings(table, { replicaId }), signer);
  await Promise.all([sink.append(record(`${replicaId}-1`)), sink.append(record(`${replicaId}-2`))]);
  await Promise.all([sink.append(record(`${replicaId}-3`)), sink.append(record(`${replicaId}-4`))]);
  await sink.append(record(`${replicaId}-5`));
  await sink.close();
  return replicaId;
}

const k = (key: { pk: string; sk: string }): { pk: { S: string }; sk: { S: string } } => ({ pk: { S: key.pk }, sk: { S: key.sk } });
const delRecord = (table: string, id: string, seq: number): Promise<unknown> => ddb.send(new DeleteItemCommand({ TableName: table, Key: k(recordKey(id, seq)) }));
const delHead = (table: string, id: string): Promise<unknown> => ddb.send(new DeleteItemCommand({ TableName: table, Key: k(headKey(id)) }));
async function lineAt(table: string, id: string, seq: number): Promise<string> {
  return (await ddb.send(new GetItemCommand({ TableName: table, Key: k(recordKey(id, seq)) }))).Item!.line!.S!;
}
async function setHead(table: string, id: string, seq: number, prevHash: string): Promise<void> {
  await ddb.send(
    new UpdateItemCommand({
      TableName: table,
      Key: k(headKey(id)),
      UpdateExpression: 'SET #s = :s, #h = :h',
      ExpressionAttributeNames: { '#s': 'seq', '#h': 'prevHash' },
      ExpressionAttributeValues: { ':s': { N: String(seq) }, ':h': { S: prevHash } },
    }),
  );
}

/** A config file naming `table` as the audit table, and the broker public key as a PEM file for --key. */
function cliConfig(table: string): { config: string; key: string } {
  const dir = tempDir();
  const config = join(dir, 'config.json');
  writeFileSync(config, JSON.stringify({ stateDir: 'state', audit: { kind: 'dynamodb', table } }));
  const key = join(dir, 'audit.pem');
  writeFileSync(key, publicKey.export({ type: 'spki', format: 'pem' }));
  return { config, key };
}

/** A recording logger. */
function logged(): { log: Logger; entries: Array<{ level: string; message: string; fields?: Record<string, unknown> }> } {
  const entries: Array<{ level: string; message: string; fields?: Record<string, unknown> }> = [];
  const log = ((level: string, message: string, fields?: Record<string, unknown>) => void entries.push({ level, message, ...(fields ? { fields } : {}) })) as Logger;
  return { log, entries };
}

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
  ddb = new DynamoDBClient(awsOf(moto));
}, 120_000);
afterAll(async () => {
  ddb?.destroy();
  process.env = savedEnv;
  await moto?.stop();
});

describe('erasure by a table admin: what the table alone can tell', () => {
  it('only the head item deleted: its records are found (a key-only scan) and reported as records without a head', async () => {
    const table = await newTable();
    await chainOf3Batches(table, 'survivor');
    const victim = await chainOf3Batches(table, 'victim');
    await delHead(table, victim);
    const orphans = (await ddb.send(new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :p', ExpressionAttributeValues: { ':p': { S: chainPartition(victim) } } }))).Items!;
    expect(orphans).toHaveLength(8);
    const r = await verifyTable(table);
    expect(r.ok).toBe(false);
    expect(r.chains.map((c) => c.id)).toEqual(['survivor']);
    expect(r.orphans).toEqual([victim]);
  });

  it('every record deleted and the head reset to its genesis, the only chain: nothing verified, not intact', async () => {
    const table = await newTable();
    const id = await chainOf3Batches(table);
    for (let s = 1; s <= 8; s++) await delRecord(table, id, s);
    await setHead(table, id, 0, chainGenesis(id));
    const r = await verifyTable(table);
    expect(r.chains[0]).toMatchObject({ id, empty: true, ok: true });
    expect(r.ok).toBe(false);
    expect(r.verifiedChains).toBe(0);
  });

  it('a table whose every chain is empty (brokers started, nothing written) verifies nothing: exit 1, "nothing verified"', async () => {
    const table = await newTable();
    const sink = await DynamoDbAuditSink.open(settings(table), signer);
    await sink.close();
    const { config, key } = cliConfig(table);
    const run = await cli(['audit', 'verify', '--config', config, '--key', key]);
    expect(run.status, run.stdout + run.stderr).toBe(1);
    expect(run.stdout).toMatch(new RegExp(`chain ${sink.chainId}: empty \\(started .*, no records\\)`));
    expect(run.stdout).toMatch(/audit chains NOT VERIFIED: no chain in table .* holds records: nothing verified/);
  });

  it('keygate audit verify --config: records without a head fail it; without --archive it says what only the archive detects', async () => {
    const table = await newTable();
    const survivor = await chainOf3Batches(table, 'survivor');
    const { config, key } = cliConfig(table);
    const good = await cli(['audit', 'verify', '--config', config, '--key', key]);
    expect(good.status, good.stdout + good.stderr).toBe(0);
    expect(good.stdout).toMatch(new RegExp(`chain ${survivor}: intact`));
    expect(good.stdout).toMatch(/coverage: the table alone: deleting whole chains, or a chain's most recent records \(its head moved back\), is detected only against the archive \(--archive\)/);
    const victim = await chainOf3Batches(table, 'victim');
    await delHead(table, victim);
    const bad = await cli(['audit', 'verify', '--config', config, '--key', key]);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(new RegExp(`chain ${victim}: RECORDS WITHOUT A HEAD`));
    expect(bad.stdout).toMatch(/audit chains NOT VERIFIED/);
    const json = await cli(['audit', 'verify', '--config', config, '--key', key, '--json']);
    expect(json.status).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, orphans: [victim] });
  });

  // Not detectable from the table alone (nothing left, or a consistent shorter chain): the S3 archive closes these
  // (verify-archive requires the table head to be at or past the archived head). Here only the output's claim is checked.
  it('the last batch deleted with the head rolled back is NOT visible in the table alone (documented: needs --archive)', async () => {
    const table = await newTable();
    const id = await chainOf3Batches(table);
    await delRecord(table, id, 8);
    await delRecord(table, id, 7);
    await setHead(table, id, 6, lineHash(await lineAt(table, id, 6)));
    expect((await verifyTable(table)).ok).toBe(true);
  });
});

describe('verifying a long chain', () => {
  it("a chain longer than V8's maximum string length is verified line by line (bounded memory), not crashed with RangeError", async () => {
    const big = 'x'.repeat(1 << 20);
    const reader: AuditChainReader = {
      listChains: async () => [{ id: 'long', head: { seq: 600, prevHash: '0'.repeat(64) } }],
      readLines: async function* () {
        for (let i = 0; i < 600; i++) yield big; // the same string: no real memory per line
      },
      close: () => {},
    };
    const outcome = await verifyAuditChains(reader, publicKey).then(
      (v) => ({ ok: v.ok, problem: v.chains[0]?.records.problem?.kind }),
      (err: Error & { code?: string }) => ({ name: err.name, code: err.code, message: err.message }),
    );
    expect(outcome).toEqual({ ok: false, problem: 'tampered' });
  });

  it('a long valid chain verifies from an async iterator without joining it', async () => {
    let head = { seq: 0, prevHash: chainGenesis('many') };
    const batches: string[][] = [];
    for (let b = 0; b < 200; b++) {
      const next = chainBatch(head, Array.from({ length: 50 }, (_, i) => ({ type: 'decision', n: b * 50 + i })), signer);
      batches.push([...next.lines]);
      head = next.head;
    }
    const reader: AuditChainReader = {
      listChains: async () => [{ id: 'many', head }],
      readLines: async function* () {
        for (const b of batches) yield* b;
      },
      close: () => {},
    };
    const r = await verifyAuditChains(reader, publicKey);
    expect(r).toMatchObject({ ok: true, verifiedChains: 1, chains: [{ ok: true, records: { decisions: 10_000, seals: 200 } }] });
  });

  it('an unexpected error while reading a chain is a coded error, not a bare crash', async () => {
    const reader: AuditChainReader = {
      listChains: async () => [{ id: 'weird', head: { seq: 1, prevHash: '0'.repeat(64) } }],
      readLines: async function* () {
        yield* [];
        throw new RangeError('Invalid string length');
      },
      close: () => {},
    };
    await expect(verifyAuditChains(reader, publicKey)).rejects.toMatchObject({ code: 'AUDIT_CHAIN_MALFORMED' });
  });
});

describe("the chain reader's pagination is bounded", () => {
  /** A client whose Query always answers one page and the same LastEvaluatedKey (a broken or malicious endpoint). */
  function loopingClient(items: (n: number) => Array<Record<string, { S: string }>>): { client: DynamoDBClient; pages: () => number } {
    const client = new DynamoDBClient({ ...awsOf(moto), maxAttempts: 1 });
    let pages = 0;
    client.middlewareStack.add(
      () => async () => {
        pages++;
        if (pages > 10_000) throw new Error('unbounded pagination');
        return { output: { $metadata: {}, Items: items(pages), LastEvaluatedKey: { pk: { S: 'chain#x' }, sk: { S: '000000000001' } } }, response: {} } as never;
      },
      { step: 'initialize', name: 'loop' },
    );
    return { client, pages: () => pages };
  }

  it('the same LastEvaluatedKey twice: AUDIT_CHAINS_UNREADABLE, after a few pages', async () => {
    const { client, pages } = loopingClient(() => []);
    const reader = new DynamoDbChainReader(settings('any'), client);
    const lines = async (): Promise<number> => {
      let n = 0;
      for await (const _ of reader.readLines('x')) n++;
      return n;
    };
    await expect(lines()).rejects.toMatchObject({ code: 'AUDIT_CHAINS_UNREADABLE' });
    expect(pages()).toBeLessThan(5);
    await expect(reader.listChains()).rejects.toMatchObject({ code: 'AUDIT_CHAINS_UNREADABLE' });
    await expect(reader.listRecordChains()).rejects.toMatchObject({ code: 'AUDIT_CHAINS_UNREADABLE' });
    expect(pages()).toBeLessThan(10);
    client.destroy();
  });

  /** A client answering Query like a table whose chain 'x' has a head at seq 4 and whose records never end: one per page, at a fresh key. */
  function endlessChainClient(): { client: DynamoDBClient; pages: () => number } {
    const client = new DynamoDBClient({ ...awsOf(moto), maxAttempts: 1 });
    let pages = 0;
    let head = { seq: 0, prevHash: chainGenesis('x') };
    const lines: string[] = [];
    const lineAtSeq = (seq: number): string => {
      while (lines.length < seq) {
        const next = chainBatch(head, [], signer); // a seal alone: a valid, sealed record
        lines.push(...next.lines);
        head = next.head;
      }
      return lines[seq - 1]!;
    };
    client.middlewareStack.add(
      (_next, context) => async (args) => {
        // The key-only scan for records without a head: one honest page (chain x has a head).
        if (context.commandName === 'ScanCommand') return { output: { $metadata: {}, Items: [{ pk: { S: 'chain#x' } }] }, response: {} } as never;
        const input = (args as { input: { ExpressionAttributeValues?: Record<string, { S?: string }> } }).input;
        const pk = input.ExpressionAttributeValues?.[':pk']?.S;
        if (pk === 'chains') {
          lineAtSeq(4);
          const item = { pk: { S: 'chains' }, sk: { S: 'x' }, seq: { N: '4' }, prevHash: { S: lineHash(lines[3]!) } };
          return { output: { $metadata: {}, Items: [item] }, response: {} } as never;
        }
        pages++;
        if (pages > 10_000) throw new Error('unbounded pagination');
        const sk = recordKey('x', pages).sk;
        return { output: { $metadata: {}, Items: [{ pk: { S: 'chain#x' }, sk: { S: sk }, line: { S: lineAtSeq(pages) } }], LastEvaluatedKey: { pk: { S: 'chain#x' }, sk: { S: sk } } }, response: {} } as never;
      },
      { step: 'initialize', name: 'endless' },
    );
    return { client, pages: () => pages };
  }

  it('records that never end (fresh keys every page): the verifier stops once they pass the head and says so', async () => {
    const { client, pages } = endlessChainClient();
    const reader = new DynamoDbChainReader(settings('any'), client);
    const r = await verifyAuditChains(reader, publicKey);
    reader.close();
    client.destroy();
    expect(r.ok).toBe(false);
    expect(r.chains[0]).toMatchObject({ id: 'x', ok: false, headProblem: { kind: 'records-beyond-head' } });
    expect(pages()).toBeLessThan(10);
  });

  it('empty pages with fresh keys forever: AUDIT_CHAINS_UNREADABLE after a bounded number', async () => {
    const client = new DynamoDBClient({ ...awsOf(moto), maxAttempts: 1 });
    let pages = 0;
    client.middlewareStack.add(
      () => async () => {
        pages++;
        if (pages > 100_000) throw new Error('unbounded pagination');
        return { output: { $metadata: {}, Items: [], LastEvaluatedKey: { pk: { S: 'chain#x' }, sk: { S: recordKey('x', pages).sk } } }, response: {} } as never;
      },
      { step: 'initialize', name: 'empty' },
    );
    const reader = new DynamoDbChainReader(settings('any'), client);
    const read = async (): Promise<void> => {
      for await (const _ of reader.readLines('x')) void _;
    };
    await expect(read()).rejects.toMatchObject({ code: 'AUDIT_CHAINS_UNREADABLE' });
    expect(pages).toBeLessThan(100);
    reader.close();
    client.destroy();
  });
});

describe('readiness reflects the audit table', () => {
  it('/readyz is not ready when the audit table cannot be reached before any request (and nothing is released)', async () => {
    const table = await newTable();
    const target = new URL(moto.endpoint);
    const sockets = new Set<Socket>();
    let cut = false;
    const server: Server = createServer((socket) => {
      if (cut) return socket.destroy();
      const up = connect(Number(target.port), target.hostname);
      sockets.add(socket).add(up);
      const drop = (): void => void (socket.destroy(), up.destroy());
      socket.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
      socket.pipe(up).pipe(socket);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    const broker = await startTestBrokerWithDb(tempDir(), [pki.root.pem], { audit: settings(table, { endpoint, maxAttempts: 1, requestTimeoutMs: 2_000 }) });
    try {
      cut = true;
      for (const s of sockets) s.destroy();
      const ready = await fetch(`${broker.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(await ready.text()).toMatch(/audit table/);
      const release = await new TestEnclave(pki, broker.url).request(['db']);
      expect(release.status).toBe(503);
      cut = false;
      await until('ready again once the table is back', async () => (await fetch(`${broker.url}/readyz`)).status === 200);
    } finally {
      await broker.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });

  it('TransactWriteItems denied (IAM) while reads work: the sink stays unhealthy until a write succeeds, then recovers', async () => {
    const table = await newTable();
    const client = new DynamoDBClient({ ...awsOf(moto), maxAttempts: 1 });
    let deny = true;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (deny && context.commandName === 'TransactWriteItemsCommand') throw Object.assign(new Error('not authorized'), { name: 'AccessDeniedException' });
        return next(args);
      },
      { step: 'initialize', name: 'deny' },
    );
    const sink = await DynamoDbAuditSink.open(settings(table), signer, { client, retryMs: 50 });
    await expect(sink.append(record('x'))).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    const seen: boolean[] = [];
    const t0 = Date.now();
    while (Date.now() - t0 < 1_000) {
      seen.push(sink.healthy);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(seen.includes(true)).toBe(false);
    deny = false;
    await until('recovery once writes are allowed again', () => sink.healthy);
    await sink.append(record('y'));
    await sink.close();
    client.destroy();
    expect((await verifyTable(table)).ok).toBe(true);
  });
});

describe('recovery with the write probe keeps the in-doubt logic (held before the probe; must still hold)', () => {
  it('a split queue with the 2nd transaction failing: every acknowledged record is in the table, in order; the rest rejected', async () => {
    const table = await newTable();
    const client = new DynamoDBClient({ ...awsOf(moto), maxAttempts: 1 });
    let n = 0;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'TransactWriteItemsCommand' && ++n === 2) throw Object.assign(new Error('boom'), { name: 'InternalServerError' });
        return next(args);
      },
      { step: 'initialize', name: 'failSecond' },
    );
    const sink = await DynamoDbAuditSink.open(settings(table, { maxBatchItems: 4 }), signer, { client, retryMs: 50 });
    const results = await Promise.allSettled(Array.from({ length: 7 }, (_, i) => sink.append(record(`n${i}`))));
    expect(results.flatMap((r, i) => (r.status === 'fulfilled' ? [`n${i}`] : []))).toEqual(['n0', 'n1']);
    await until('recovery', () => sink.healthy);
    await sink.append(record('after'));
    await sink.close();
    client.destroy();
    expect((await verifyTable(table)).ok).toBe(true);
  });

  it('a transaction given up locally that lands after the recovery: the chain continues from where it put the head, and verifies', async () => {
    const table = await newTable();
    const client = new DynamoDBClient({ ...awsOf(moto), maxAttempts: 1 });
    let n = 0;
    let releaseLate!: () => void;
    const gate = new Promise<void>((r) => (releaseLate = r));
    let late: Promise<unknown> | undefined;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'TransactWriteItemsCommand' && ++n === 2) {
          late = gate.then(() => next(args)); // sent later: it still applies
          throw Object.assign(new Error('deadline'), { name: 'TimeoutError' });
        }
        return next(args);
      },
      { step: 'initialize', name: 'late' },
    );
    const sink = await DynamoDbAuditSink.open(settings(table), signer, { client, retryMs: 50 });
    await sink.append(record('a'));
    await expect(sink.append(record('lost-answer'))).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    await until('recovery (head unchanged, the probe written)', () => sink.healthy);
    releaseLate();
    await late;
    await expect(sink.append(record('b'))).rejects.toMatchObject({ code: 'AUDIT_UNAVAILABLE' });
    await until('recovery (head where the late batch put it)', () => sink.healthy);
    await sink.append(record('c'));
    await sink.close();
    client.destroy();
    expect((await verifyTable(table)).ok).toBe(true);
  });
});

describe('a refusal summary that cannot be written leaves a trace', () => {
  const refusal = (client: string): DecisionRecord => ({ ...record('r'), decision: 'deny', code: 'ATTESTATION_INVALID', client });

  it('DynamoDB sink: counted refusals lost on abandon are logged at error level with their count', async () => {
    const table = await newTable();
    const { log, entries } = logged();
    const sink = await DynamoDbAuditSink.open(settings(table), signer, { log, refusals: { perClientBurst: 1, perClientPerSecond: 0.001, globalBurst: 1, globalPerSecond: 0.001 } });
    for (let i = 0; i < 5; i++) await sink.appendRefusal(refusal('10.0.0.1'));
    sink.abandon('test');
    await sink.close();
    expect(entries.filter((e) => e.level === 'error' && /refusal/.test(e.message))).toEqual([expect.objectContaining({ fields: expect.objectContaining({ lostRefusals: 4 }) })]);
  });

  it('file log: counted refusals lost on abandon are logged at error level with their count', async () => {
    const { log, entries } = logged();
    const audit = await AuditLog.open(join(tempDir(), 'audit.jsonl'), signer, { log, refusals: { perClientBurst: 1, perClientPerSecond: 0.001, globalBurst: 1, globalPerSecond: 0.001 } });
    for (let i = 0; i < 3; i++) await audit.appendRefusal(refusal('10.0.0.2'));
    audit.abandon('test');
    await audit.close();
    expect(entries.filter((e) => e.level === 'error' && /refusal/.test(e.message))).toEqual([expect.objectContaining({ fields: expect.objectContaining({ lostRefusals: 2 }) })]);
  });
});
