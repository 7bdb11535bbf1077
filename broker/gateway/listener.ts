import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { parseHostPort } from '../../lib/host-port.js';
import type { GatewayService } from './service.js';
import type { GatewaySettings } from './settings.js';

/** The gateway's TLS listener, running. */
export interface GatewayListener {
  readonly url: string;
  readonly server: Server;
  close(): Promise<void>;
}

/**
 * Serves the gateway on its own TLS 1.3 listener (its own certificate, pinned by enclaves): TLS 1.3 is
 * what the channel binding (RFC 9266 exporter) is defined for. Timeouts as for the broker's listener.
 */
export async function listenGateway(service: GatewayService, settings: GatewaySettings, limits: { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number; connectionsCheckingInterval: number }, maxConnections: number): Promise<GatewayListener> {
  const address = parseHostPort(settings.listen);
  if (!address) throw new Error(`gateway.listen "${settings.listen}" must be HOST:PORT`);
  const [cert, key] = await Promise.all([readFile(settings.certFile), readFile(settings.keyFile)]);
  // Streamed answers (server-sent events) may take longer than a request: the request timeout covers receiving the request only.
  const server = createServer({ cert, key, minVersion: 'TLSv1.3', ...limits, handshakeTimeout: limits.headersTimeout }, service.handle);
  server.maxConnections = maxConnections;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => resolve());
  });
  const bound = server.address() as AddressInfo;
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  return {
    url: `https://${host}:${bound.port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
