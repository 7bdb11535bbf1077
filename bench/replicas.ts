/**
 * bench/replicas (`npm run bench -- replicas`; not part of the default run):
 * releases/s and p50/p99 of POST /v1/secrets through real `keygate broker`
 * processes (each its own Node process, as deployed), all in one run:
 *  - the file-store broker (embedded default, local provider);
 *  - 1 replica on DynamoDB (store, shared nonces, quarantine, shared keys; aws-kms);
 *  - 3 replicas on DynamoDB, the load spread round-robin over them;
 *  - 1 replica on DynamoDB with nonces in memory: the difference to the row
 *    above is what the shared nonce write costs per release;
 * and the nonce write itself (one conditional PutItem, as the registry does
 * it) timed on its own.
 *
 * DynamoDB is moto_server on loopback by default (one request at a time: it is
 * the bottleneck, so this measures keygate's request count per release, not
 * DynamoDB's speed). BENCH_REPLICAS_AWS=1 runs against the AWS the SDK
 * environment points at instead (see the README: tables are created and left
 * in place, requests are billed).
 *
 *  - 1 replica on DynamoDB with its audit in a local file instead of its chain
 *    in the DynamoDB audit table: the difference is what the shared audit
 *    write (group commit: one transaction per batch) costs per release.
 * Every other DynamoDB row audits to the table, as examples/broker-dynamodb.json does.
 */
import '../test/support/setup.js';
import { Worker } from 'node:worker_threads';
import { createServer, request, type Server } from 'node:http';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { createTestPki, type TestPki } from '../test/support/pki.js';
import { APPROVED, TestEnclave } from '../test/support/enclave.js';
import { startMoto, uniqueName, type Moto } from '../test/support/moto.js';
import { prepareBrokerDir } from '../test/support/broker-process.js';
import { createKmsAlias, KMS_ALIAS, keygateAsync, spawnReplica, stopReplica, writeReplicaConfig, type Replica } from '../test/support/replicas.js';
import { printTable, quantile, writeResults, type Measurement } from './harness.js';

const REQUESTS = Number(process.env.BENCH_REPLICAS_REQUESTS ?? 600);
const CONCURRENCY = Number(process.env.BENCH_REPLICAS_CONCURRENCY ?? 12);
const WARMUP = Math.min(100, REQUESTS);
/** Documents per timed round (each round's nonces are minted just before it). */
const ROUND = 200;
const NONCE_PUTS = Number(process.env.BENCH_REPLICAS_NONCE_PUTS ?? 200);
const ON_AWS = process.env.BENCH_REPLICAS_AWS === '1';

function runLoad(urls: string[], bodies: string[]): Promise<{ seconds: number; failures: number; failureCodes: Record<string, number>; latencies: number[] }> {
  const worker = new Worker(fileURLToPath(new URL('./load-worker.mjs', import.meta.url)), { workerData: { urls, bodies, concurrency: CONCURRENCY } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

interface Row extends Measurement {
  replicas: number;
  p50Ms: number;
  p99Ms: number;
}

/** Warm-up, then REQUESTS fresh documents (nonces from the brokers themselves, minted right before the run) spread over `urls`. */
async function measureReleases(name: string, pki: TestPki, urls: string[], secret: string): Promise<Row> {
  const enclaves = urls.map((u) => new TestEnclave(pki, u));
  const body = (d: Uint8Array): string => JSON.stringify({ attestation: Buffer.from(d).toString('base64'), names: [secret] });
  const mint = async (n: number): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const e = enclaves[i % enclaves.length]!;
      out.push(body(e.document(await e.challenge())));
    }
    return out;
  };
  const warm = await runLoad(urls, await mint(WARMUP));
  if (warm.failures) throw new Error(`${name}: ${warm.failures} of ${WARMUP} warm-up requests failed: ${JSON.stringify(warm.failureCodes)}`);
  // Rounds of documents minted right before each: a challenge nonce expires 30 s after issue, and a slow
  // backend must not turn the benchmark into a test of nonce expiry. Minting is not timed.
  const load = { seconds: 0, latencies: [] as number[] };
  for (let done = 0; done < REQUESTS; done += ROUND) {
    const round = await runLoad(urls, await mint(Math.min(ROUND, REQUESTS - done)));
    if (round.failures) throw new Error(`${name}: ${round.failures} of ${Math.min(ROUND, REQUESTS - done)} requests failed: ${JSON.stringify(round.failureCodes)}`);
    load.seconds += round.seconds;
    load.latencies.push(...round.latencies);
  }
  const sorted = Float64Array.from(load.latencies).sort();
  return {
    name,
    replicas: urls.length,
    ops: REQUESTS,
    seconds: load.seconds,
    opsPerSec: REQUESTS / load.seconds,
    usPerOp: (load.seconds * 1e6) / REQUESTS,
    p50Ms: quantile(sorted, 0.5),
    p99Ms: quantile(sorted, 0.99),
  };
}

/** One conditional PutItem per fresh key, sequential: the shared nonce registry's write, without a broker around it. */
async function measureNoncePut(table: string): Promise<{ p50Ms: number; p99Ms: number; perSec: number }> {
  const ddb = new DynamoDBClient({});
  try {
    const times = new Float64Array(NONCE_PUTS);
    const put = (i: number) =>
      ddb.send(
        new PutItemCommand({
          TableName: table,
          Item: { pk: { S: `bench-nonce#${process.pid}-${Date.now()}-${i}` }, expiresAt: { N: String(Math.floor(Date.now() / 1000) + 60) } },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    for (let i = 0; i < 20; i++) await put(-1 - i); // warm-up: connection, SDK
    const start = performance.now();
    for (let i = 0; i < NONCE_PUTS; i++) {
      const t = performance.now();
      await put(i);
      times[i] = performance.now() - t;
    }
    const seconds = (performance.now() - start) / 1000;
    times.sort();
    return { p50Ms: quantile(times, 0.5), p99Ms: quantile(times, 0.99), perSec: NONCE_PUTS / seconds };
  } finally {
    ddb.destroy();
  }
}

/**
 * A loopback HTTP proxy in front of moto that counts AWS calls by operation (X-Amz-Target: DynamoDB's
 * PutItem, GetItem, TransactWriteItems..., KMS's Decrypt): the brokers' DynamoDB requests per release,
 * which is what DynamoDB bills, independent of how fast moto answers them.
 */
async function countingProxy(target: string): Promise<{ url: string; counts: Map<string, number>; close: () => Promise<void> }> {
  const counts = new Map<string, number>();
  const upstream = new URL(target);
  const server: Server = createServer((req, res) => {
    const op = String(req.headers['x-amz-target'] ?? `${req.method} ${req.url}`).replace(/^DynamoDB_\d+\./, 'dynamodb:').replace(/^TrentService\./, 'kms:');
    counts.set(op, (counts.get(op) ?? 0) + 1);
    const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, counts, close: () => new Promise((r) => server.close(() => r())) };
}

/** Calls per release of each operation between two snapshots of the proxy's counts. */
function perRelease(before: Map<string, number>, after: Map<string, number>, releases: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [op, n] of after) {
    const d = n - (before.get(op) ?? 0);
    if (d > 0 && op.includes(':')) out[op] = Math.round((d / releases) * 1000) / 1000;
  }
  return out;
}

export async function benchReplicas(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-replicas-'));
  const started: Replica[] = [];
  const closers: Array<() => Promise<void>> = [];
  let moto: Moto | undefined;
  const savedEnv = { ...process.env };
  try {
    const pki = await createTestPki(Date.now());
    if (!ON_AWS) {
      moto = await startMoto();
      Object.assign(process.env, moto.env);
      await createKmsAlias(moto);
    } else if (!process.env.AWS_REGION) {
      throw new Error('BENCH_REPLICAS_AWS=1 needs the AWS SDK environment (AWS_REGION, credentials) and the KMS alias alias/keygate');
    }
    // On moto the brokers and the CLI talk to it through the counting proxy (not available on AWS: TLS end to end).
    const proxy = moto ? await countingProxy(moto.endpoint) : undefined;
    const env = { ...process.env, ...(proxy ? { AWS_ENDPOINT_URL: proxy.url } : {}) };
    closers.push(async () => proxy?.close());
    const calls: Record<string, Record<string, number>> = {};
    const counted = async (row: () => Promise<Row>): Promise<Row> => {
      const before = new Map(proxy?.counts ?? []);
      const r = await row();
      // Warm-up and measured requests both went through: count per release over both.
      if (proxy) calls[r.name] = perRelease(before, proxy.counts, r.ops + WARMUP);
      return r;
    };
    const start = async (name: string, config: string, stateDir: string): Promise<Replica> => {
      mkdirSync(stateDir, { recursive: true });
      const r = await spawnReplica(name, config, stateDir, env);
      started.push(r);
      return r;
    };

    // The file-store broker: the embedded default (file store, memory nonces, local provider).
    const fileDir = join(dir, 'file');
    mkdirSync(fileDir);
    const fileBroker = await start('file', await prepareBrokerDir(fileDir, pki), join(fileDir, 'state'));
    const rows: Row[] = [await measureReleases('file store, 1 broker', pki, [fileBroker.url], 'db')];
    await stopReplica(fileBroker);

    // DynamoDB: tables per run on moto; fixed (reused) names on AWS so runs do not leave a trail of tables.
    const storeTable = process.env.BENCH_REPLICAS_STORE_TABLE ?? (ON_AWS ? 'keygate-bench' : uniqueName('keygate-bench'));
    const sharedTable = process.env.BENCH_REPLICAS_SHARED_TABLE ?? (ON_AWS ? 'keygate-bench-shared' : uniqueName('keygate-bench-shared'));
    const auditTable = process.env.BENCH_REPLICAS_AUDIT_TABLE ?? (ON_AWS ? 'keygate-bench-audit' : uniqueName('keygate-bench-audit'));
    const configFor = (sub: string, o: { memoryNonces?: boolean; fileAudit?: boolean } = {}): string => {
      mkdirSync(join(dir, sub));
      return writeReplicaConfig(join(dir, sub), { storeTable, sharedTable, extraRootPems: [pki.root.pem], memoryNonces: o.memoryNonces ?? false, ...(o.fileAudit ? {} : { auditTable }) });
    };
    const shared = configFor('shared');
    const memory = configFor('memory-nonces', { memoryNonces: true });
    const fileAudit = configFor('file-audit', { fileAudit: true });
    const admin = async (args: string[], input?: string): Promise<void> => {
      const run = await keygateAsync([...args, '--config', shared], env, input);
      if (run.status !== 0) throw new Error(`keygate ${args.join(' ')}: ${run.stderr}`);
    };
    await admin(['store', 'init']);
    await admin(['bind', 'db', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--value-stdin', '--provider', 'aws-kms', '--kms-key-id', KMS_ALIAS], 'bench-value');

    const three = await Promise.all(['a', 'b', 'c'].map((n) => start(`ddb-${n}`, shared, join(dir, 'shared', `state-${n}`))));
    rows.push(await counted(() => measureReleases('DynamoDB, 1 replica', pki, [three[0]!.url], 'db')));
    rows.push(await counted(() => measureReleases('DynamoDB, 3 replicas (round-robin)', pki, three.map((r) => r.url), 'db')));
    await Promise.all(three.map((r) => stopReplica(r)));
    const mem = await start('ddb-memory-nonces', memory, join(dir, 'memory-nonces', 'state'));
    rows.push(await counted(() => measureReleases('DynamoDB, 1 replica, nonces in memory', pki, [mem.url], 'db')));
    await stopReplica(mem);
    const local = await start('ddb-file-audit', fileAudit, join(dir, 'file-audit', 'state'));
    rows.push(await counted(() => measureReleases('DynamoDB, 1 replica, audit in a local file', pki, [local.url], 'db')));
    await stopReplica(local);
    const noncePut = await measureNoncePut(sharedTable);

    const [file, one, threeRow, memRow, fileAuditRow] = rows as [Row, Row, Row, Row, Row];
    const nonceCostMs = 1000 / one.opsPerSec - 1000 / memRow.opsPerSec;
    const auditCostMs = 1000 / one.opsPerSec - 1000 / fileAuditRow.opsPerSec;
    const title = `bench/replicas (real broker processes, ${ON_AWS ? 'AWS DynamoDB + KMS' : 'moto_server on loopback, one request at a time'}, ${CONCURRENCY} concurrent clients, one secret per request, audit on DynamoDB unless the row says otherwise)`;
    printTable(title, rows, {
      ...Object.fromEntries(rows.map((r) => [`${r.name}: p50 / p99 latency (ms)`, `${r.p50Ms.toFixed(2)} / ${r.p99Ms.toFixed(2)}`])),
      'shared nonce write, conditional PutItem alone: p50 / p99 (ms)': `${noncePut.p50Ms.toFixed(2)} / ${noncePut.p99Ms.toFixed(2)} (${noncePut.perSec.toFixed(0)}/s sequential)`,
      ...Object.fromEntries(Object.entries(calls).map(([name, c]) => [`${name}: AWS calls per release`, JSON.stringify(c)])),
      'shared nonce cost per release (1/rate with DynamoDB nonces - 1/rate with memory nonces, ms of throughput)': nonceCostMs.toFixed(2),
      'shared audit cost per release (1/rate with the DynamoDB chain - 1/rate with a local file, ms of throughput)': auditCostMs.toFixed(2),
      '3 replicas ÷ 1 replica (releases/s)': (threeRow.opsPerSec / one.opsPerSec).toFixed(2),
      'DynamoDB 1 replica ÷ file store (releases/s)': (one.opsPerSec / file.opsPerSec).toFixed(2),
    });
    const out = writeResults('replicas', {
      backend: ON_AWS ? 'aws' : 'moto',
      processes: 'real keygate broker processes',
      auditTable,
      requests: REQUESTS,
      concurrency: CONCURRENCY,
      rows,
      noncePut,
      nonceCostMsPerRelease: nonceCostMs,
      auditCostMsPerRelease: auditCostMs,
      awsCallsPerRelease: calls,
    });
    console.log(`wrote ${out}`);
    return { rows };
  } finally {
    await Promise.all(started.map((r) => stopReplica(r, 'SIGKILL')));
    for (const close of closers) await close();
    await moto?.stop();
    process.env = savedEnv;
    rmSync(dir, { recursive: true, force: true });
  }
}
