/**
 * The DynamoDB store's staleness bound, exactly: with maxStalenessMs 0 a
 * refresh sees every change committed before it was called, even while an
 * older read is in flight (concurrent callers share a read only if it started
 * after they arrived). A loopback proxy in front of moto holds the answer of
 * one version read, so "a read in flight that began before the change" is
 * made deterministic instead of hoped for.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import { DynamoDbStore, initDynamoDbStoreTable } from '../../broker/store/dynamodb-store.js';
import type { DynamoDbStoreSettings } from '../../broker/store/open-store.js';
import { parseBinding } from '../../broker/policy/schema.js';
import type { Binding } from '../../broker/policy/types.js';
import { awsOf, startMoto, uniqueName, type Moto } from '../support/moto.js';

let moto: Moto;
beforeAll(async () => {
  moto = await startMoto();
}, 90_000);
afterAll(async () => {
  await moto?.stop();
});

const h = (n: number): string => n.toString(16).padStart(2, '0').repeat(48);
function binding(secret: string): Binding {
  return parseBinding({
    secret, version: 1, provider: 'aws-kms', kmsKeyId: 'alias/k', ciphertext: 'AAAA', text: true, allow: [{ pcrs: { 0: h(1), 1: h(2), 2: h(3) } }],
    allowDebug: false, ttlSeconds: 60, revoked: false, createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z',
  });
}

/** An HTTP proxy to moto that, when armed, holds the response to the next read of the store version until released. */
async function holdingProxy(target: string): Promise<{ endpoint: string; arm(): Promise<() => void>; close(): Promise<void> }> {
  let armed: ((release: () => void) => void) | undefined;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const isVersionRead = String(req.headers['x-amz-target'] ?? '').endsWith('.GetItem') && body.toString().includes('"version"');
      const url = new URL(req.url ?? '/', target);
      const upstream = request(url, { method: req.method, headers: { ...req.headers, host: url.host } }, (up: IncomingMessage) => {
        const parts: Buffer[] = [];
        up.on('data', (c: Buffer) => parts.push(c));
        up.on('end', () => {
          const send = (): void => {
            res.writeHead(up.statusCode ?? 500, up.headers);
            res.end(Buffer.concat(parts));
          };
          const hold = isVersionRead ? armed : undefined;
          if (hold) {
            armed = undefined;
            hold(send);
          } else send();
        });
      });
      upstream.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    // Resolves once a version read's answer (read at moto, so before any later change) is being held.
    arm: () => new Promise((resolve) => (armed = resolve)),
    close: () => new Promise((r) => server.close(() => r())),
  };
}

describe('DynamoDB store, maxStalenessMs 0', () => {
  it('a refresh called after a change sees it, although a read that began before the change is still in flight', async () => {
    const aws = awsOf(moto);
    const table = uniqueName('keygate-stale');
    const direct: DynamoDbStoreSettings = { kind: 'dynamodb', table, region: aws.region, endpoint: aws.endpoint, consistency: { maxStalenessMs: 0 } };
    await initDynamoDbStoreTable(direct, { credentials: aws.credentials });
    const proxy = await holdingProxy(moto.endpoint);
    const admin = await DynamoDbStore.open(direct, { client: { credentials: aws.credentials } });
    const replica = await DynamoDbStore.open({ ...direct, endpoint: proxy.endpoint }, { client: { credentials: aws.credentials } });
    try {
      await admin.update(async (_s, tx) => tx.putBinding(binding('db')));
      expect((await replica.refresh()).bindings.get('db')?.revoked).toBe(false);
      const held = proxy.arm();
      const before = replica.refresh(); // its version read is answered (pre-change) and held at the proxy
      const release = await held;
      await admin.update(async (current, tx) => tx.putBinding(parseBinding({ ...current.bindings.get('db')!, revoked: true })));
      const after = replica.refresh(); // called after the revocation committed
      release();
      await before;
      expect((await after).bindings.get('db')?.revoked).toBe(true);
      // Callers in the same turn still share one read.
      const together = [replica.refresh(), replica.refresh(), replica.refresh()];
      expect(new Set(together).size).toBe(1);
      await Promise.all(together);
    } finally {
      admin.close();
      replica.close();
      await proxy.close();
    }
  });
});
