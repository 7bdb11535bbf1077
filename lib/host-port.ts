/**
 * `HOST:PORT` parsing, shared by the broker (`listen`), the forwarder
 * (`--allow`, `--listen tcp:`), the enclave transports (`tcp:HOST:PORT`) and
 * the agent (`brokerUrl`). A leaf module: node builtins only, so both sides
 * of the vsock boundary may import it.
 */

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

const HOST_PORT = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/;

/**
 * Splits `HOST:PORT` or `[IPv6]:PORT` (the brackets are dropped). Returns
 * undefined unless the port is 0..65535; callers add their own rules (a
 * non-zero port, a DNS-name host) and their own error.
 */
export function parseHostPort(text: string): HostPort | undefined {
  const m = HOST_PORT.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) return undefined;
  return { host: m[1] ?? m[2]!, port };
}

/** `HOST:PORT`, an IPv6 host in brackets (the inverse of parseHostPort). */
export function formatHostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}
