import { createServer, connect, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseHostPort, type HostPort } from '../lib/host-port.js';

/** host:port an enclave may reach through the parent. */
export type Destination = HostPort;

/** Something that accepts connections: a TCP server, or the addon's vsock listener. */
export interface Listener {
  readonly address: string;
  close(): Promise<void>;
}

export interface ForwarderOptions {
  readonly allow: readonly Destination[];
  /** Connections relayed at once; more are refused with 503. Default 64. */
  readonly maxConnections?: number;
  /** A relay with no traffic either way for this long is closed. Default 60 s. */
  readonly idleTimeoutMs?: number;
  /** Time allowed for the CONNECT request head and for the upstream connect. Default 10 s. */
  readonly handshakeTimeoutMs?: number;
  /** One JSON-able event per decision. */
  readonly log?: (event: Record<string, unknown>) => void;
}

export interface ForwarderStats {
  active: number;
  relayed: number;
  denied: number;
  refused: number;
  malformed: number;
}

const MAX_HEAD = 8 * 1024;
/**
 * After a final reply (503/4xx/502) the connection is closed once the peer
 * hangs up or, at the latest, this long after the reply: long enough for the
 * reply to leave, short enough that peers that never hang up hold no slot.
 */
const CLOSE_AFTER_REPLY_MS = 1_000;

/** Parses `host:port` (host may be [v6]) into a destination. */
export function parseDestination(text: string): Destination {
  const parsed = parseHostPort(text.trim());
  // A bracketed host is an IPv6 address (it has a colon); any other must be a DNS name or IPv4 address.
  if (!parsed || parsed.port < 1 || !(parsed.host.includes(':') || /^[A-Za-z0-9.-]+$/.test(parsed.host))) throw new TypeError(`"${text}" is not HOST:PORT`);
  return { host: parsed.host.toLowerCase(), port: parsed.port };
}

/**
 * The parent-side relay: an enclave opens a stream (vsock in production),
 * sends `CONNECT host:port HTTP/1.1`, and is connected only if that exact
 * destination is allow-listed. Everything else is refused and logged, so a
 * compromised enclave cannot use the parent as a general egress path.
 */
export class Forwarder {
  readonly stats: ForwarderStats = { active: 0, relayed: 0, denied: 0, refused: 0, malformed: 0 };
  readonly #allow: Set<string>;
  readonly #max: number;
  readonly #idle: number;
  readonly #handshake: number;
  readonly #log: (event: Record<string, unknown>) => void;
  readonly #sockets = new Set<Duplex>();

  constructor(options: ForwarderOptions) {
    if (options.allow.length === 0) throw new TypeError('a forwarder needs at least one --allow destination');
    this.#allow = new Set(options.allow.map((d) => `${d.host.toLowerCase()}:${d.port}`));
    this.#max = options.maxConnections ?? 64;
    this.#idle = options.idleTimeoutMs ?? 60_000;
    this.#handshake = options.handshakeTimeoutMs ?? 10_000;
    this.#log = options.log ?? (() => {});
  }

  /** Handles one enclave connection (from any listener). */
  handle(client: Duplex, peer: string): void {
    this.#sockets.add(client);
    client.on('close', () => this.#sockets.delete(client));
    client.on('error', () => client.destroy());
    if (this.stats.active >= this.#max) {
      this.stats.refused++;
      this.#log({ decision: 'refuse', reason: 'connection limit', peer });
      closeWithReply(client, 'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\r\n');
      return;
    }
    this.stats.active++;
    let released = false;
    const release = (): void => {
      if (!released) {
        released = true;
        this.stats.active--;
      }
    };
    client.once('close', release);

    let head = Buffer.alloc(0);
    const timer = setTimeout(() => {
      // Stop parsing first: nothing that arrives after the 408 may be routed.
      client.off('data', onData);
      this.#reject(client, 408, 'Request Timeout', { peer, reason: 'handshake timeout' });
    }, this.#handshake);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD) {
          clearTimeout(timer);
          client.off('data', onData);
          this.#reject(client, 431, 'Request Header Fields Too Large', { peer, reason: 'request head too large' });
        }
        return;
      }
      clearTimeout(timer);
      client.off('data', onData);
      client.pause();
      this.#route(client, peer, head.subarray(0, end).toString('latin1'), head.subarray(end + 4));
    };
    client.on('data', onData);
  }

  #reject(client: Duplex, status: number, text: string, event: Record<string, unknown>): void {
    if (status === 403) this.stats.denied++;
    else this.stats.malformed++;
    this.#log({ decision: 'deny', status, ...event });
    closeWithReply(client, `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n\r\n`);
  }

  #route(client: Duplex, peer: string, head: string, rest: Buffer): void {
    const line = head.split('\r\n', 1)[0]!;
    const m = /^CONNECT (\S+) HTTP\/1\.[01]$/.exec(line);
    let target: Destination;
    try {
      if (!m) throw new TypeError('not a CONNECT request');
      target = parseDestination(m[1]!);
    } catch {
      this.#reject(client, 400, 'Bad Request', { peer, reason: 'expected CONNECT host:port', line: line.slice(0, 200) });
      return;
    }
    const key = `${target.host}:${target.port}`;
    if (!this.#allow.has(key)) {
      this.#reject(client, 403, 'Forbidden', { peer, target: key, reason: 'destination not allow-listed' });
      return;
    }
    const upstream: Socket = connect({ host: target.host, port: target.port, timeout: this.#handshake });
    this.#sockets.add(upstream);
    upstream.on('close', () => this.#sockets.delete(upstream));
    // An enclave that hangs up while the upstream connect is pending takes the upstream with it.
    client.once('close', () => upstream.destroy());
    const connectTimeout = (): void => void upstream.destroy(new Error('connect timeout'));
    upstream.once('timeout', connectTimeout);
    let relaying = false;
    upstream.on('error', (err) => {
      this.#log({ decision: 'error', peer, target: key, reason: err.message });
      // Mid-relay the tunnel carries the enclave's own protocol: no HTTP reply there, just close.
      if (relaying) client.destroy();
      else if (!client.destroyed && client.writable) closeWithReply(client, 'HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n');
    });
    upstream.once('connect', () => {
      relaying = true;
      this.stats.relayed++;
      this.#log({ decision: 'relay', peer, target: key });
      // From here the socket timeout means idleness, not a slow connect: log it as such.
      upstream.off('timeout', connectTimeout);
      upstream.setTimeout(this.#idle, () => {
        this.#log({ decision: 'close', peer, target: key, reason: 'idle timeout', idleMs: this.#idle });
        upstream.destroy();
        client.destroy();
      });
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (rest.length) upstream.write(rest);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      upstream.once('close', () => client.destroy());
    });
  }

  /** Drops every open connection. */
  closeAll(): void {
    for (const s of this.#sockets) s.destroy();
  }
}

/**
 * Sends a final reply and closes the connection without waiting on the peer:
 * the reply is flushed, input is drained and dropped (so closing does not
 * reset the connection before the reply is read), and the socket is destroyed
 * when the peer hangs up or after CLOSE_AFTER_REPLY_MS, whichever is first.
 */
function closeWithReply(client: Duplex, reply: string): void {
  const timer = setTimeout(() => client.destroy(), CLOSE_AFTER_REPLY_MS);
  timer.unref();
  client.once('close', () => clearTimeout(timer));
  client.once('end', () => client.destroy());
  client.removeAllListeners('data');
  client.on('data', () => {});
  client.resume();
  client.end(reply);
}

/** A TCP listener for the forwarder (tests, or a parent without vsock). */
export async function listenTcp(forwarder: Forwarder, host: string, port: number): Promise<Listener & { port: number }> {
  const server: Server = createServer((socket) => forwarder.handle(socket, `${socket.remoteAddress}:${socket.remotePort}`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const address = server.address() as { port: number };
  return {
    address: `tcp:${host}:${address.port}`,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        forwarder.closeAll();
        server.close(() => resolve());
      }),
  };
}
