import { createServer, connect, Socket, type Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { parseHostPort, type HostPort } from '../lib/host-port.js';
import { spliceRelayAvailable, startSpliceRelay, type SpliceRelay } from './splice-relay.js';

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
  /**
   * How bytes are relayed once a tunnel is up. "auto" (default): TCP-to-TCP
   * relays move in the kernel with splice(2) when the native addon is built,
   * else (and for vsock streams) through Node streams; "js": always Node streams.
   */
  readonly relay?: 'auto' | 'js';
}

export interface ForwarderStats {
  active: number;
  relayed: number;
  denied: number;
  refused: number;
  malformed: number;
}

const MAX_HEAD = 8 * 1024;
const ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';
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
  readonly #relays = new Set<SpliceRelay>();
  readonly #splice: boolean;

  constructor(options: ForwarderOptions) {
    if (options.allow.length === 0) throw new TypeError('a forwarder needs at least one --allow destination');
    this.#allow = new Set(options.allow.map((d) => `${d.host.toLowerCase()}:${d.port}`));
    this.#max = options.maxConnections ?? 64;
    this.#idle = options.idleTimeoutMs ?? 60_000;
    this.#handshake = options.handshakeTimeoutMs ?? 10_000;
    this.#log = options.log ?? (() => {});
    this.#splice = (options.relay ?? 'auto') === 'auto' && spliceRelayAvailable();
  }

  /** true when TCP-to-TCP relays run in the kernel (splice) rather than through Node streams. */
  get splicing(): boolean {
    return this.#splice;
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
      client.off('end', onEnd);
      this.#reject(client, 408, 'Request Timeout', { peer, reason: 'handshake timeout' });
    }, this.#handshake);
    // Connections are half-open capable (a tunnel relays half-close); one that ends before its request head holds nothing.
    const onEnd = (): void => {
      clearTimeout(timer);
      client.destroy();
    };
    client.once('end', onEnd);
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD) {
          clearTimeout(timer);
          client.off('data', onData);
          client.off('end', onEnd);
          this.#reject(client, 431, 'Request Header Fields Too Large', { peer, reason: 'request head too large' });
        }
        return;
      }
      clearTimeout(timer);
      client.off('data', onData);
      client.off('end', onEnd);
      client.pause();
      this.#route(client, peer, head.subarray(0, end).toString('latin1'), head.subarray(end + 4), release);
    };
    client.on('data', onData);
  }

  #reject(client: Duplex, status: number, text: string, event: Record<string, unknown>): void {
    if (status === 403) this.stats.denied++;
    else this.stats.malformed++;
    this.#log({ decision: 'deny', status, ...event });
    closeWithReply(client, `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\n\r\n`);
  }

  #route(client: Duplex, peer: string, head: string, rest: Buffer, release: () => void): void {
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
    // Half-open capable: an enclave that ends its sending side still gets the whole answer.
    const upstream: Socket = connect({ host: target.host, port: target.port, timeout: this.#handshake, allowHalfOpen: true });
    this.#sockets.add(upstream);
    upstream.on('close', () => this.#sockets.delete(upstream));
    // An enclave that hangs up while the upstream connect is pending takes the upstream with it.
    const clientGone = (): void => void upstream.destroy();
    client.once('close', clientGone);
    const connectTimeout = (): void => void upstream.destroy(new Error('connect timeout'));
    upstream.once('timeout', connectTimeout);
    let relaying = false;
    upstream.on('error', (err) => {
      this.#log({ decision: 'error', peer, target: key, reason: err.message });
      // Mid-relay the tunnel carries the enclave's own protocol: no HTTP reply there; an abort stays an abort.
      if (relaying) abort(client);
      else if (!client.destroyed && client.writable) closeWithReply(client, 'HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n');
    });
    upstream.once('connect', () => {
      relaying = true;
      this.stats.relayed++;
      this.#log({ decision: 'relay', peer, target: key });
      // From here the socket timeout means idleness, not a slow connect: log it as such.
      upstream.off('timeout', connectTimeout);
      const idleClose = (): void => this.#log({ decision: 'close', peer, target: key, reason: 'idle timeout', idleMs: this.#idle });
      if (this.#splice && client instanceof Socket) {
        const relay = this.#spliceRelay(client, upstream, rest, release, (event) => {
          if (event.reason === 'idle') idleClose();
          else if (event.reason === 'error') this.#log({ decision: 'error', peer, target: key, reason: `${event.code ?? 'error'} on the ${event.side === 'a' ? 'enclave' : 'upstream'} side` });
        });
        if (relay) {
          client.off('close', clientGone);
          return;
        }
      }
      upstream.setTimeout(this.#idle, () => {
        idleClose();
        upstream.destroy();
        client.destroy();
      });
      client.off('close', clientGone);
      // Each side closes on its own once both directions have ended (half-close relayed by pipe());
      // one that closes without that (error, reset, destroy) aborts the other.
      const abortOther = (self: Duplex, other: Duplex) => (): void => {
        if (!(self.readableEnded && self.writableFinished)) abort(other);
      };
      client.once('close', abortOther(client, upstream));
      upstream.once('close', abortOther(upstream, client));
      client.once('error', () => abort(upstream));
      client.write(ESTABLISHED);
      if (rest.length) upstream.write(rest);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  }

  /**
   * Hands a TCP-to-TCP tunnel to the addon's splice relay: the bytes still buffered in Node
   * (the 200 reply, what followed the request head, anything read since) go first, then the
   * kernel moves the rest. The Node sockets are closed (the relay holds duplicates); the
   * connection's slot is released when the relay ends. undefined: not possible, relay in JS.
   */
  #spliceRelay(
    client: Socket,
    upstream: Socket,
    rest: Buffer,
    release: () => void,
    onEnd: (event: { reason: string; code: string | null; side: string | null }) => void,
  ): SpliceRelay | undefined {
    const toUpstream = [rest, ...drain(client)];
    const toClient = [Buffer.from(ESTABLISHED, 'latin1'), ...drain(upstream)];
    const relay = startSpliceRelay(client, upstream, {
      idleMs: this.#idle,
      toB: Buffer.concat(toUpstream),
      toA: Buffer.concat(toClient),
      onEnd: (event) => {
        this.#relays.delete(relay!);
        release();
        onEnd(event);
      },
    });
    if (!relay) {
      // Nothing was consumed for good: put the drained bytes back in front of the JS relay.
      if (toUpstream.length > 1) client.unshift(Buffer.concat(toUpstream.slice(1)));
      if (toClient.length > 1) upstream.unshift(Buffer.concat(toClient.slice(1)));
      return undefined;
    }
    this.#relays.add(relay);
    client.off('close', release);
    client.destroy();
    upstream.destroy();
    return relay;
  }

  /** Drops every open connection. */
  closeAll(): void {
    for (const s of this.#sockets) s.destroy();
    for (const r of this.#relays) r.close();
  }
}

/** Everything a paused stream has buffered. */
function drain(stream: Duplex): Buffer[] {
  const out: Buffer[] = [];
  for (let chunk: Buffer | null; (chunk = stream.read() as Buffer | null) !== null; ) out.push(chunk);
  return out;
}

/**
 * Closes a stream so its peer sees an abort (TCP reset), not a clean end of stream. Not while its own
 * end is being flushed (end() called, shutdown pending): node then refuses the reset (EINVAL) and never
 * closes the handle (a descriptor leaked, and exit spins). Its sending side ended cleanly anyway: close it.
 */
function abort(stream: Duplex): void {
  if (stream instanceof Socket && !stream.destroyed && (!stream.writableEnded || stream.writableFinished)) stream.resetAndDestroy();
  else stream.destroy();
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
  // allowHalfOpen: a tunnel relays half-close (the enclave may end its request and still read the answer).
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => forwarder.handle(socket, `${socket.remoteAddress}:${socket.remotePort}`));
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
