/**
 * /readyz reflects the shared tables (DynamoDB store, nonces, quarantine) with
 * a cheap, coalesced and reused check, and DynamoDB errors fail closed:
 * throttling is retried within the deadline, then the request is refused with
 * 503 STORE_UNAVAILABLE and nothing is released. The throttling comes from a
 * loopback proxy in front of moto_server that answers DynamoDB calls with the
 * JSON errors DynamoDB sends (400 ThrottlingException /
 * ProvisionedThroughputExceededException) while told to, and counts calls.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JWK } from 'jose';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { AwsKmsKeyProvider } from '../../broker/kms/aws-kms.js';
import { DynamoDbStore, initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import type { DynamoDbStoreSettings } from '../../broker/store/open-store.js';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker, startTestBrokerWithDb } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../support/enclave.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let pki: TestPki;
let savedEnv: NodeJS.ProcessEnv;
const tempDir = tempDirs('keygate-readiness-');

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
}, 120_000);
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
});

type Fault = 'none' | 'ThrottlingException' | 'ProvisionedThroughputExceededException';

/** A loopback proxy to moto that counts DynamoDB calls and, while `fault` is set, answers each with that error. */
async function dynamoProxy(): Promise<{ endpoint: string; fault: Fault; calls: string[]; close(): Promise<void> }> {
  const state = { fault: 'none' as Fault, calls: [] as string[] };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const target = String(req.headers['x-amz-target'] ?? '');
      state.calls.push(target.replace(/^DynamoDB_\d+\./, ''));
      if (state.fault !== 'none') {
        res.writeHead(400, { 'content-type': 'application/x-amz-json-1.0' });
        res.end(JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${state.fault}`, message: 'Rate of requests exceeds the allowed throughput.' }));
        return;
      }
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !['host', 'connection', 'content-length'].includes(k)).map(([k, v]) => [k, String(v)]));
      fetch(`${moto.endpoint}${req.url ?? '/'}`, { method: req.method, headers, body: Buffer.concat(chunks) })
        .then(async (up) => {
          res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/x-amz-json-1.0' });
          res.end(Buffer.from(await up.arrayBuffer()));
        })
        .catch(() => {
          res.writeHead(502);
          res.end();
        });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    endpoint: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  });
}

/** Polls /readyz until `status` (bounded): its answer is reused for up to 5 s after a success. */
async function readyzUntil(url: string, status: number): Promise<{ status: number; reason?: string }> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const res = await fetch(`${url}/readyz`);
    const body = (await res.json()) as { reason?: string };
    if (res.status === status || Date.now() > deadline) return { status: res.status, ...(body.reason ? { reason: body.reason } : {}) };
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('/readyz and the shared tables', () => {
  it('nonces on a table nobody answers: /readyz 503 naming the nonce table; a release is refused with STORE_UNAVAILABLE', async () => {
    const proxy = await dynamoProxy();
    proxy.fault = 'ThrottlingException';
    const dir = tempDir();
    let broker: RunningBroker | undefined;
    try {
      broker = await startTestBrokerWithDb(dir, [pki.root.pem], { nonces: { kind: 'dynamodb', table: 'keygate-nonces-ready', endpoint: proxy.endpoint, maxAttempts: 2, requestTimeoutMs: 5_000 } });
      // Many unauthenticated probes at once: one check (two SDK attempts), its answer shared and reused.
      const probes = await Promise.all(Array.from({ length: 20 }, () => fetch(`${broker!.url}/readyz`)));
      expect(probes.map((p) => p.status)).toEqual(Array(20).fill(503));
      const reason = ((await probes[0]!.json()) as { reason: string }).reason;
      expect(reason).toMatch(/^the shared nonce registry is unavailable \(nonce table keygate-nonces-ready: GetItem failed \(ThrottlingException\)\)$/);
      for (let i = 0; i < 10; i++) expect((await fetch(`${broker.url}/readyz`)).status).toBe(503);
      expect(proxy.calls.filter((c) => c === 'GetItem').length).toBeLessThanOrEqual(2);

      const before = proxy.calls.length;
      const res = await new TestEnclave(pki, broker.url).request(['db']);
      expect([res.status, res.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']);
      expect(res.body.secrets).toBeUndefined();
      expect(proxy.calls.slice(before)).toEqual(['PutItem', 'PutItem']); // the consume, retried by the SDK, then refused
    } finally {
      await broker?.close();
      await proxy.close();
    }
  });

  it('nonces on a closed port: /readyz 503 naming the nonce table', async () => {
    const proxy = await dynamoProxy();
    const endpoint = proxy.endpoint;
    await proxy.close(); // nothing listens there any more
    const dir = tempDir();
    const broker = await startTestBrokerWithDb(dir, [pki.root.pem], { nonces: { kind: 'dynamodb', table: 'keygate-nonces-closed', endpoint, maxAttempts: 1, requestTimeoutMs: 3_000 } });
    try {
      const ready = await fetch(`${broker.url}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { reason: string }).reason).toMatch(/^the shared nonce registry is unavailable \(nonce table keygate-nonces-closed: GetItem failed/);
      const res = await new TestEnclave(pki, broker.url).request(['db']);
      expect([res.status, res.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']);
    } finally {
      await broker.close();
    }
  });

  it('a throttled DynamoDB store: reads retried within the deadline, then 503 STORE_UNAVAILABLE with nothing released, /readyz 503 naming the store; served again once it recovers', async () => {
    const proxy = await dynamoProxy();
    const settings: DynamoDbStoreSettings = { kind: 'dynamodb', table: uniqueName('keygate-throttled'), endpoint: proxy.endpoint, consistency: { maxStalenessMs: 0 } };
    await initDynamoDbStoreTable(settings);
    const kms = new KMSClient({});
    const key = await kms.send(new CreateKeyCommand({ Description: 'keygate readiness test' }));
    kms.destroy();
    const admin = await DynamoDbStore.open(settings);
    const provider = new AwsKmsKeyProvider({});
    await bindSecret(admin, provider, { secret: 'db', value: new TextEncoder().encode('db-value'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: key.KeyMetadata!.KeyId! });
    provider.close();
    admin.close();
    const dir = tempDir();
    let broker: RunningBroker | undefined;
    try {
      broker = await startTestBroker(dir, [pki.root.pem], { store: settings });
      const brokerJwk = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
      const enclave = new TestEnclave(pki, broker.url);
      const ok = await enclave.request(['db']);
      expect(ok.status).toBe(200);
      expect(valueOf(await enclave.open(ok.body.secrets![0]!, brokerJwk))).toBe('db-value');
      expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);

      for (const fault of ['ThrottlingException', 'ProvisionedThroughputExceededException'] as const) {
        proxy.fault = fault;
        const before = proxy.calls.length;
        const t0 = performance.now();
        const res = await enclave.request(['db']);
        const took = performance.now() - t0;
        expect([res.status, res.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']);
        expect(res.body.secrets).toBeUndefined();
        // The store version read was retried (the SDK's attempts: 3), then refused well within the 5 s deadline.
        expect(proxy.calls.slice(before).filter((c) => c === 'GetItem').length).toBe(3);
        expect(took).toBeLessThan(5_000 + 2_000);
        const ready = await readyzUntil(broker.url, 503);
        expect(ready.status).toBe(503);
        expect(ready.reason).toMatch(new RegExp(`^the store \\(dynamodb:${settings.table}\\) is unavailable \\(DynamoDB table ${settings.table}: reading the store version failed \\(${fault}: `));
        proxy.fault = 'none';
        const back = await enclave.request(['db']);
        expect(back.status).toBe(200);
        expect((await readyzUntil(broker.url, 200)).status).toBe(200);
      }
    } finally {
      await broker?.close();
      await proxy.close();
    }
  });
});
