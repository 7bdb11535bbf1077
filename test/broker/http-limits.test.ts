/** Slow or numerous clients cannot hold the broker's HTTP server: real sockets on 127.0.0.1. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import type { RunningBroker } from '../../broker/broker.js';
import type { BrokerConfig } from '../../broker/config.js';
import { startTestBroker } from '../support/broker.js';
import { rawClient as openRawClient, type RawClient } from '../support/raw-client.js';

let dir: string;
const brokers: RunningBroker[] = [];
const sockets: Socket[] = [];
const timers: NodeJS.Timeout[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-http-limits-'));
});
afterAll(async () => {
  for (const t of timers) clearInterval(t);
  for (const s of sockets) s.destroy();
  for (const b of brokers) await b.close();
  rmSync(dir, { recursive: true, force: true });
});

async function broker(name: string, extra: Partial<BrokerConfig>): Promise<RunningBroker> {
  const b = await startTestBroker(join(dir, name), [], extra);
  brokers.push(b);
  return b;
}

/** A raw client socket on `b`'s port (test/support/raw-client.ts), destroyed after each test. */
const rawClient = (b: RunningBroker): Promise<RawClient> => openRawClient(b.url, sockets);

/** Connections the server side currently holds. */
function serverConnections(b: RunningBroker): Promise<number> {
  return new Promise((resolve, reject) => b.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

describe('broker HTTP server limits', () => {
  it('has sane defaults: headers 10 s, request 30 s, keep-alive 5 s, 1024 connections', async () => {
    const b = await broker('defaults', {});
    expect(b.server).toMatchObject({ headersTimeout: 10_000, requestTimeout: 30_000, keepAliveTimeout: 5_000, maxConnections: 1024 });
  });

  it('closes an idle keep-alive connection after keepAliveTimeoutSeconds', async () => {
    const b = await broker('keep-alive', { keepAliveTimeoutSeconds: 0.3 });
    const client = await rawClient(b);
    client.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    await expect.poll(client.received, { timeout: 20_000, interval: 50 }).toMatch(/^HTTP\/1\.1 200 OK/);
    await expect.poll(client.closed, { timeout: 20_000, interval: 50 }).toBe(true);
  }, 60_000);

  it('closes a client that trickles header bytes once the headers timeout passes', async () => {
    const b = await broker('trickle', { headersTimeoutSeconds: 0.5, requestTimeoutSeconds: 1 });
    const client = await rawClient(b);
    client.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    // One header byte every 100 ms: never idle, never finished.
    const trickle = setInterval(() => {
      if (!client.socket.destroyed) client.socket.write('X');
    }, 100);
    timers.push(trickle);
    await expect.poll(client.closed, { timeout: 20_000, interval: 50 }).toBe(true);
    clearInterval(trickle);
    expect(client.received()).toMatch(/^HTTP\/1\.1 408 /);
    // A silent connection that never sends a byte is closed too.
    const silent = await rawClient(b);
    await expect.poll(silent.closed, { timeout: 20_000, interval: 50 }).toBe(true);
    // Normal requests still work.
    expect((await fetch(`${b.url}/healthz`)).status).toBe(200);
  }, 90_000);

  it('closes a client that trickles its body once the request timeout passes', async () => {
    const b = await broker('slow-body', { headersTimeoutSeconds: 0.5, requestTimeoutSeconds: 1 });
    const client = await rawClient(b);
    client.socket.write('POST /v1/secrets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
    const trickle = setInterval(() => {
      if (!client.socket.destroyed) client.socket.write(' ');
    }, 100);
    timers.push(trickle);
    await expect.poll(client.closed, { timeout: 20_000, interval: 50 }).toBe(true);
    clearInterval(trickle);
    expect(client.received()).not.toMatch(/200 OK/);
  }, 60_000);

  it('refuses connections beyond maxConnections and serves again once one closes', async () => {
    const b = await broker('cap', { maxConnections: 4, headersTimeoutSeconds: 60, requestTimeoutSeconds: 120 });
    const held = [];
    for (let i = 0; i < 4; i++) held.push(await rawClient(b));
    await expect.poll(() => serverConnections(b), { timeout: 20_000, interval: 50 }).toBe(4);
    const extra = await rawClient(b);
    await expect.poll(extra.closed, { timeout: 20_000, interval: 50 }).toBe(true);
    expect(held.every((c) => !c.closed())).toBe(true);
    expect(await b.metrics.droppedConnections.render()).toMatch(/^keygate_connections_dropped_total 1$/m);
    held[0]!.socket.destroy();
    await expect.poll(() => serverConnections(b), { timeout: 20_000, interval: 50 }).toBeLessThan(4);
    const res = await fetch(`${b.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
    // A held connection can still make a normal request.
    held[1]!.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    await expect.poll(held[1]!.received, { timeout: 20_000, interval: 50 }).toMatch(/^HTTP\/1\.1 200 OK/);
  }, 120_000);
});
