/**
 * The parent relays the enclave<->gateway bytes and is the attacker (issue 13): it flips bytes, replays
 * recorded bytes, or answers with its own TLS key. The agent fails closed with a clear code and nothing
 * reaches the upstream; bytes replayed to the broker do nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { errorOf } from '../support/agent.js';
import { startGatewayFixture, type GatewayFixture } from '../support/gateway.js';
import { selfSigned } from '../support/tls.js';

type Mode = { kind: 'record' } | { kind: 'flip-handshake' } | { kind: 'flip-after-handshake' } | { kind: 'replay-server'; bytes: Buffer };

/** A TCP relay in front of the gateway, doing what `mode` says; records what passes in `record` mode. */
class Relay {
  server!: Server;
  mode: Mode = { kind: 'record' };
  readonly toServer: Buffer[] = [];
  readonly toClient: Buffer[] = [];
  port = 0;

  constructor(private readonly target: number) {}

  async start(): Promise<void> {
    this.server = createServer((client) => this.#handle(client));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as AddressInfo).port;
  }

  #handle(client: Socket): void {
    const mode = this.mode;
    client.on('error', () => undefined);
    if (mode.kind === 'replay-server') {
      // No broker at all: yesterday's server bytes, whatever the client says.
      client.once('data', () => client.write(mode.bytes));
      return;
    }
    const server = connect(this.target, '127.0.0.1');
    server.on('error', () => client.destroy());
    client.on('close', () => server.destroy());
    server.on('close', () => client.destroy());
    let fromServer = 0;
    let clientChunks = 0;
    let flipped = false;
    client.on('data', (chunk: Buffer) => {
      clientChunks++;
      if (mode.kind === 'record') this.toServer.push(Buffer.from(chunk));
      server.write(chunk);
    });
    server.on('data', (chunk: Buffer) => {
      const out = Buffer.from(chunk);
      if (mode.kind === 'record') this.toClient.push(Buffer.from(chunk));
      if (mode.kind === 'flip-handshake' && !flipped && fromServer + out.length > 200) {
        out[200 - fromServer]! ^= 0x01; // inside the server's encrypted handshake flight
        flipped = true;
      }
      if (mode.kind === 'flip-after-handshake' && !flipped && clientChunks >= 2) {
        out[out.length - 1]! ^= 0x01; // a record after the client's Finished (tickets or the answer)
        flipped = true;
      }
      fromServer += out.length;
      client.write(out);
    });
  }

  close(): Promise<void> {
    return new Promise((r) => this.server.close(() => r()));
  }
}

let fx: GatewayFixture;
let relay: Relay;
const auditLines = (): number => readFileSync(join(fx.dir, 'state', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).length;

beforeAll(async () => {
  fx = await startGatewayFixture();
  await fx.bind('openai', 'sk-relay-real-key');
  relay = new Relay(fx.gatewayPort);
  await relay.start();
}, 120_000);

afterAll(async () => {
  await relay?.close();
  await fx?.close();
});

describe('a parent that tampers with or replays the enclave<->gateway bytes', () => {
  it('an honest relay works (control), and its bytes are recorded for the replays below', async () => {
    const a = await fx.agent(relay.port);
    const res = await a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' });
    expect(res.status).toBe(200);
    await res.text();
    expect(fx.seen.at(-1)).toBe('Bearer sk-relay-real-key');
    expect(relay.toServer.length).toBeGreaterThan(1);
    await a.close();
  });

  it.each(['flip-handshake', 'flip-after-handshake'] as const)('one flipped bit (%s): the agent fails closed with GATEWAY_TLS_FAILED; nothing reaches the upstream', async (kind) => {
    relay.mode = { kind };
    const before = fx.seen.length;
    const a = await fx.agent(relay.port);
    expect((await errorOf(a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' }))).code).toBe('GATEWAY_TLS_FAILED');
    expect(fx.seen.length).toBe(before);
  });

  it('recorded server bytes replayed to a new connection: GATEWAY_TLS_FAILED', async () => {
    relay.mode = { kind: 'replay-server', bytes: Buffer.concat(relay.toClient) };
    const a = await fx.agent(relay.port);
    expect((await errorOf(a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' }))).code).toBe('GATEWAY_TLS_FAILED');
  });

  it('recorded enclave bytes (token request and call) replayed to the gateway do nothing: no call, no record', async () => {
    const before = { seen: fx.seen.length, audit: auditLines() };
    const socket = connect(fx.gatewayPort, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.resume(); // read (and drop) the gateway's answer, so its close is seen
    const closed = new Promise<void>((r) => socket.once('close', () => r()));
    for (const chunk of relay.toServer) socket.write(chunk);
    await closed; // the gateway ends the connection: the replayed handshake cannot complete
    expect(fx.seen.length).toBe(before.seen);
    expect(auditLines()).toBe(before.audit);
  });

  it('a parent answering with its own TLS key: GATEWAY_UNTRUSTED, nothing is sent to it', async () => {
    const impostor = await selfSigned('not the gateway');
    let received = 0;
    const server: TlsServer = createTlsServer({ cert: impostor.certPem, key: impostor.keyPem, minVersion: 'TLSv1.3' }, (s) => s.on('data', (d: Buffer) => (received += d.length)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const a = await fx.agent((server.address() as AddressInfo).port);
    expect((await errorOf(a.fetch('openai', '/v1/echo', { method: 'POST', body: '{}' }))).code).toBe('GATEWAY_UNTRUSTED');
    expect(received).toBe(0);
    await new Promise<void>((r) => server.close(() => r()));
  });
});
