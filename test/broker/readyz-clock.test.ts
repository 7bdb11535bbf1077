/**
 * /readyz reuses a shared-table check for a few seconds. That window is
 * measured on a monotonic clock: a wall clock stepped back (NTP correction,
 * VM resume) must not stretch a cached success, or /readyz answers 200 long
 * after the DynamoDB store became unreachable (found in review: it stayed 200
 * for the size of the step).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';
import { initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import type { DynamoDbStoreSettings } from '../../broker/store/open-store.js';
import { NO_RATE_LIMITS } from '../support/broker.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let savedEnv: NodeJS.ProcessEnv;
const tempDir = tempDirs('keygate-readyz-clock-');
beforeAll(async () => {
  moto = await startMoto();
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
}, 90_000);
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
});

async function faultyProxy(): Promise<{ endpoint: string; down: boolean; close(): Promise<void> }> {
  const state = { down: false };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (state.down) {
        res.writeHead(500, { 'content-type': 'application/x-amz-json-1.0' });
        res.end(JSON.stringify({ __type: 'com.amazonaws.dynamodb.v20120810#InternalServerError', message: 'down' }));
        return;
      }
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !['host', 'connection', 'content-length'].includes(k)).map(([k, v]) => [k, String(v)]));
      fetch(`${moto.endpoint}${req.url ?? '/'}`, { method: req.method, headers, body: Buffer.concat(chunks) }).then(
        async (up) => {
          res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/x-amz-json-1.0' });
          res.end(Buffer.from(await up.arrayBuffer()));
        },
        () => {
          res.writeHead(502);
          res.end();
        },
      );
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return Object.assign(state, {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); }),
  });
}

describe('/readyz cache and a wall clock stepped back', () => {
  it('answers 503 within ~10 s of the store becoming unreachable, even after an NTP step back', async () => {
    const proxy = await faultyProxy();
    const settings: DynamoDbStoreSettings = { kind: 'dynamodb', table: uniqueName('keygate-readyz-clock'), endpoint: proxy.endpoint, consistency: { maxStalenessMs: 0 } };
    await initDynamoDbStoreTable(settings);
    const dir = tempDir();
    let offset = 0;
    let broker: RunningBroker | undefined;
    try {
      broker = await startBroker(resolveConfig({ listen: '127.0.0.1:0', store: settings, stateDir: join(dir, 'state'), rateLimits: NO_RATE_LIMITS }), { log: silentLogger, clock: () => Date.now() + offset });
      expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);
      offset = -3_600_000; // the wall clock is stepped back one hour
      proxy.down = true; // and the store becomes unreachable
      const deadline = Date.now() + 30_000; // the cache window is 5 s; the bug held 200 for an hour
      let status = 0;
      while (Date.now() < deadline) {
        status = (await fetch(`${broker.url}/readyz`)).status;
        if (status === 503) break;
        await new Promise((r) => setTimeout(r, 250));
      }
      // Releases are refused meanwhile (the release path reads the store itself): /readyz is the only liar.
      expect(status).toBe(503);
    } finally {
      await broker?.close();
      await proxy.close();
    }
  }, 60_000);
});
