/** The parent-side forwarder, TCP to TCP on 127.0.0.1, and the agent tunnelling through it. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Forwarder, listenTcp, parseDestination } from '../../vsock-shim/forwarder.js';
import { tcpTransport } from '../../vsock-shim/transport/transport.js';
import { tunnelTransport } from '../../vsock-shim/transport/tunnel.js';

let echo: Server;
let echoPort: number;
let closedPort: number;

beforeAll(async () => {
  echo = createServer((s) => s.pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  echoPort = (echo.address() as { port: number }).port;
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  closedPort = (probe.address() as { port: number }).port;
  await new Promise<void>((r) => probe.close(() => r()));
});
afterAll(() => new Promise<void>((r) => echo.close(() => r())));

async function withForwarder<T>(options: Partial<ConstructorParameters<typeof Forwarder>[0]>, fn: (port: number, f: Forwarder, events: Array<Record<string, unknown>>) => Promise<T>): Promise<T> {
  const events: Array<Record<string, unknown>> = [];
  const f = new Forwarder({ allow: [{ host: '127.0.0.1', port: echoPort }], log: (e) => events.push(e), ...options });
  const listener = await listenTcp(f, '127.0.0.1', 0);
  try {
    return await fn(listener.port, f, events);
  } finally {
    await listener.close();
  }
}

/** Sends `request`, returns everything read until the peer closes or `until` matches. */
function exchange(port: number, request: string, until?: RegExp, extra?: (s: Socket) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (until?.test(out)) {
        s.destroy();
        resolve(out);
      }
    });
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.write(request);
    extra?.(s);
  });
}

/** A peer that sends `request`, reads the reply, and then never closes its side on its own. */
async function stubbornPeer(port: number, request: string): Promise<{ socket: Socket; replied: Promise<void>; received: () => string }> {
  const socket = connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  let out = '';
  const replied = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (out.includes('\r\n\r\n')) resolve();
    });
  });
  await new Promise((r) => socket.once('connect', r));
  socket.write(request);
  return { socket, replied, received: () => out };
}

/** A destination that records every connection and the bytes it receives, and answers nothing. */
async function recordingServer(): Promise<{ port: number; received: string[]; connections: () => number; close: () => Promise<void> }> {
  const received: string[] = [];
  const sockets = new Set<Socket>();
  let connections = 0;
  const server = createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('data', (d: Buffer) => received.push(d.toString('latin1')));
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    received,
    connections: () => connections,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('forwarder', () => {
  it('relays an allow-listed destination, bytes after the request head included', () =>
    withForwarder({}, async (port, f, events) => {
      const out = await exchange(port, `CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\nearly bytes|`, /late bytes/, (s) => setTimeout(() => s.write('late bytes'), 20));
      expect(out).toMatch(/^HTTP\/1\.1 200 Connection Established\r\n\r\nearly bytes\|late bytes/);
      expect(events).toContainEqual(expect.objectContaining({ decision: 'relay', target: `127.0.0.1:${echoPort}` }));
      expect(f.stats.relayed).toBe(1);
    }));

  it('refuses and logs a destination that is not allow-listed', () =>
    withForwarder({}, async (port, f, events) => {
      const out = await exchange(port, `CONNECT 127.0.0.1:${closedPort} HTTP/1.1\r\n\r\n`);
      expect(out).toMatch(/^HTTP\/1\.1 403 Forbidden/);
      expect(events).toContainEqual(expect.objectContaining({ decision: 'deny', status: 403, target: `127.0.0.1:${closedPort}` }));
      expect(f.stats.denied).toBe(1);
      const other = await exchange(port, `CONNECT example.com:443 HTTP/1.1\r\n\r\n`);
      expect(other).toMatch(/^HTTP\/1\.1 403/);
    }));

  it.each([
    ['a plain GET', 'GET / HTTP/1.1\r\n\r\n', 400],
    ['a CONNECT without port', 'CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n', 400],
    ['garbage', '\x00\x01\x02\r\n\r\n', 400],
  ])('answers %s with %i', (_name, request, status) =>
    withForwarder({}, async (port) => {
      expect(await exchange(port, request)).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    }));

  it('bounds the request head and the handshake time', () =>
    withForwarder({ handshakeTimeoutMs: 200 }, async (port) => {
      expect(await exchange(port, 'CONNECT ' + 'a'.repeat(9000))).toMatch(/^HTTP\/1\.1 431 /);
      expect(await exchange(port, 'CONNECT 127.0.0.1:1 HTTP/1.1\r\n')).toMatch(/^HTTP\/1\.1 408 /);
    }));

  it('answers 502 when the allowed destination is down', () =>
    withForwarder({ allow: [{ host: '127.0.0.1', port: closedPort }] }, async (port) => {
      expect(await exchange(port, `CONNECT 127.0.0.1:${closedPort} HTTP/1.1\r\n\r\n`)).toMatch(/^HTTP\/1\.1 502 /);
    }));

  it('refuses connections beyond the limit and closes idle relays', () =>
    withForwarder({ maxConnections: 1, idleTimeoutMs: 150 }, async (port, f) => {
      const first = connect(port, '127.0.0.1');
      first.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\n`);
      await new Promise((r) => first.once('data', r));
      expect(await exchange(port, `CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\n`)).toMatch(/^HTTP\/1\.1 503 /);
      expect(f.stats.refused).toBe(1);
      await new Promise((r) => first.once('close', r)); // idle timeout
      await expect.poll(() => f.stats.active, { timeout: 10_000 }).toBe(0);
    }));

  it('logs an idle relay closed for idleness as "idle timeout", not as a connect timeout', () =>
    withForwarder({ idleTimeoutMs: 150, handshakeTimeoutMs: 5_000 }, async (port, _f, events) => {
      const client = connect(port, '127.0.0.1');
      client.write(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\n`);
      await new Promise((r) => client.once('data', r));
      await new Promise((r) => client.once('close', r)); // idle timeout
      const after = events.filter((e) => e.decision !== 'relay');
      expect(after).toEqual([{ decision: 'close', peer: expect.any(String), target: `127.0.0.1:${echoPort}`, reason: 'idle timeout', idleMs: 150 }]);
    }));

  it('closes denied and malformed connections after the reply, so idle denied peers hold no slot', () =>
    withForwarder({ maxConnections: 3 }, async (port, f) => {
      // Hostile peers: read the reply, then neither close nor send anything more.
      const peers = await Promise.all([
        stubbornPeer(port, `CONNECT 127.0.0.1:${closedPort} HTTP/1.1\r\n\r\n`),
        stubbornPeer(port, 'GET / HTTP/1.1\r\n\r\n'),
        stubbornPeer(port, 'CONNECT ' + 'a'.repeat(9000)),
      ]);
      await Promise.all(peers.map((p) => p.replied));
      expect(peers.map((p) => p.received().slice(0, 12))).toEqual(['HTTP/1.1 403', 'HTTP/1.1 400', 'HTTP/1.1 431']);
      await expect.poll(() => f.stats.active, { timeout: 15_000, interval: 50 }).toBe(0);
      // Every slot is free again: a legitimate enclave is relayed, not refused with 503.
      const ok = await exchange(port, `CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\n\r\nping`, /ping/);
      expect(ok).toMatch(/^HTTP\/1\.1 200 /);
      expect(f.stats.refused).toBe(0);
      for (const p of peers) p.socket.destroy();
    }));

  it('relays nothing that arrives after a handshake timeout and frees the slot', async () => {
    const upstream = await recordingServer();
    try {
      await withForwarder({ allow: [{ host: '127.0.0.1', port: upstream.port }], handshakeTimeoutMs: 200 }, async (port, f) => {
        const late = await stubbornPeer(port, `CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\n`);
        await late.replied;
        expect(late.received()).toMatch(/^HTTP\/1\.1 408 /);
        // The rest of the head and a payload, too late: must never reach the destination.
        late.socket.write('\r\nlate bytes');
        // A sequence point: a relay opened afterwards reaches the destination; it must be the only one.
        const ok = await exchange(port, `CONNECT 127.0.0.1:${upstream.port} HTTP/1.1\r\n\r\nmarker`, /200 Connection Established\r\n\r\n/);
        expect(ok).toMatch(/^HTTP\/1\.1 200 /);
        await expect.poll(() => upstream.received.join('|'), { timeout: 15_000 }).toContain('marker');
        expect(upstream.received.join('|')).not.toContain('late');
        expect(upstream.connections()).toBe(1);
        expect(f.stats.relayed).toBe(1);
        await expect.poll(() => f.stats.active, { timeout: 15_000, interval: 50 }).toBe(0);
        late.socket.destroy();
      });
    } finally {
      await upstream.close();
    }
  });

  it('lets the agent tunnel through it (tunnelTransport)', () =>
    withForwarder({}, async (port) => {
      const t = tunnelTransport(tcpTransport('127.0.0.1', port), `127.0.0.1:${echoPort}`);
      const stream = await t.connectAsync!();
      stream.resume();
      const reply = await new Promise<string>((resolve) => {
        stream.once('data', (d: Buffer) => resolve(d.toString()));
        stream.write('ping');
      });
      expect(reply).toBe('ping');
      stream.destroy();
      const denied = tunnelTransport(tcpTransport('127.0.0.1', port), 'example.com:443');
      await expect(denied.connectAsync!()).rejects.toMatchObject({ code: 'TRANSPORT_UNAVAILABLE', message: expect.stringMatching(/403/) });
    }));

  it('parses destinations strictly', () => {
    expect(parseDestination('Broker.Example:443')).toEqual({ host: 'broker.example', port: 443 });
    expect(parseDestination('[::1]:8443')).toEqual({ host: '::1', port: 8443 });
    for (const bad of ['broker', 'broker:0', 'broker:70000', 'a b:1', 'http://x:1']) expect(() => parseDestination(bad)).toThrow(TypeError);
    expect(() => new Forwarder({ allow: [] })).toThrow(TypeError);
  });
});
