import { connect as netConnect } from 'node:net';
import type { Duplex } from 'node:stream';
import { CodedError } from '../../lib/coded-error.js';
import { formatHostPort, parseHostPort } from '../../lib/host-port.js';

/** How an enclave reaches the broker: each call opens one byte stream. */
export interface Transport {
  /** For logs and the HTTP Host header. */
  readonly description: string;
  connect(): Duplex;
  /** For transports that need a handshake before the stream is usable (CONNECT tunnels). */
  connectAsync?(): Promise<Duplex>;
}

/** Failures opening or using a transport. */
export class TransportError extends CodedError<'TRANSPORT_UNAVAILABLE' | 'TRANSPORT_INVALID'> {
  override readonly name = 'TransportError';
}

/** TCP, for tests and `--dev`. */
export function tcpTransport(host: string, port: number): Transport {
  return { description: formatHostPort(host, port), connect: () => netConnect({ host, port }) };
}

/** A Unix domain socket, for tests and same-host setups. */
export function unixTransport(path: string): Transport {
  return { description: 'localhost', connect: () => netConnect({ path }) };
}

/** A vsock connector, provided by the native addon (kept out of this module so it loads without it). */
export type VsockConnector = (cid: number, port: number) => Duplex;

/** AF_VSOCK to `cid:port` (CID 3 is the Nitro parent instance). */
export function vsockTransport(cid: number, port: number, connector: VsockConnector): Transport {
  return { description: `vsock-${cid}-${port}`, connect: () => connector(cid, port) };
}

/**
 * Parses `tcp:HOST:PORT`, `unix:PATH` or `vsock:CID:PORT`. The vsock form
 * needs `connector` (from the vsock-shim addon).
 */
export function parseTransport(spec: string, connector?: VsockConnector): Transport {
  if (spec.startsWith('tcp:')) {
    const tcp = parseHostPort(spec.slice(4));
    if (!tcp || tcp.port === 0) throw new TransportError('TRANSPORT_INVALID', `bad TCP address in "${spec}": expected tcp:HOST:PORT with PORT in 1..65535`);
    return tcpTransport(tcp.host, tcp.port);
  }
  if (spec.startsWith('unix:') && spec.length > 5) return unixTransport(spec.slice(5));
  const vsock = /^vsock:(\d{1,10}):(\d{1,10})$/.exec(spec);
  if (vsock) {
    const cid = Number(vsock[1]);
    const port = Number(vsock[2]);
    if (cid > 0xffffffff || port > 0xffffffff) throw new TransportError('TRANSPORT_INVALID', `CID and port must fit in 32 bits: "${spec}"`);
    if (!connector) throw new TransportError('TRANSPORT_UNAVAILABLE', 'vsock transport needs the vsock-shim native addon');
    return vsockTransport(cid, port, connector);
  }
  throw new TransportError('TRANSPORT_INVALID', `"${spec}" is not tcp:HOST:PORT, unix:PATH or vsock:CID:PORT`);
}
