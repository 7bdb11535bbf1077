import { randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { isBrokerErrorCode } from '../broker/protocol/index.js';
import { AgentError } from './errors.js';
import { brokerError, GATEWAY_ERROR_HEADER, readAll, type GatewayClient } from './gateway-client.js';

/** A credential name, as bindings name secrets. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Largest request body the local gateway holds (the broker's per-credential limit is usually lower). */
const MAX_LOCAL_BODY = 16 * 1024 * 1024 + 1;
/** Hop-by-hop and framing headers (RFC 9110 7.6.1): never passed on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'expect']);

/** The local endpoint an unmodified SDK inside the enclave talks to (see SecretAgent.gateway). */
export interface GatewayHandle {
  /** `http://127.0.0.1:PORT/<name>`: the base URL standing in for the upstream of credential `name`. */
  url(name: string): string;
  /** A random stand-in for the API key of `name` (this gateway's own; never forwarded, worthless elsewhere). */
  substitute(name: string): string;
  close(): Promise<void>;
}

function checkName(name: string): string {
  if (!NAME.test(name)) throw new AgentError('BAD_REQUEST', `"${name}" is not a credential name`);
  return name;
}

/**
 * The request headers to send on: without hop-by-hop headers, the broker's own, and any header carrying a
 * substitute (the SDK's Authorization / api-key header): a substitute never leaves the enclave.
 */
function outgoingHeaders(headers: IncomingHttpHeaders | Headers, substitutes: readonly string[]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const entries: Array<[string, string | string[] | undefined]> = headers instanceof Headers ? [...headers.entries()] : Object.entries(headers);
  for (const [rawName, value] of entries) {
    const name = rawName.toLowerCase();
    if (value === undefined || HOP_BY_HOP.has(name) || name.startsWith('keygate-')) continue;
    const text = Array.isArray(value) ? value.join(', ') : value;
    if (substitutes.some((s) => text.includes(s))) continue;
    out[name] = value;
  }
  return out;
}

function answerHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !(HOP_BY_HOP.has(name) && name !== 'content-length')) out[name] = value;
  return out;
}

/** Everything in a request body, or undefined past `max`. */
function bodyOf(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        resolve(undefined);
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** The substitutes of one gateway: random per name, made on first use. */
export class Substitutes {
  readonly #values = new Map<string, string>();

  of(name: string): string {
    let value = this.#values.get(checkName(name));
    if (!value) this.#values.set(name, (value = `kgsub-${randomBytes(24).toString('base64url')}`));
    return value;
  }

  all(): string[] {
    return [...this.#values.values()];
  }
}

function writeError(res: ServerResponse, status: number, code: string, message: string): void {
  const text = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'keygate-agent-error': code });
  res.end(text);
}

/**
 * Starts the local gateway on 127.0.0.1 (a random port): `/<name>/<path>` is sent to the broker's gateway
 * as a call with credential `name`; answers (server-sent events included) stream back as they arrive.
 */
export async function startLocalGateway(client: GatewayClient, substitutes: Substitutes): Promise<GatewayHandle> {
  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = req.url ?? '/';
      const m = /^\/([^/?]+)(\/[^?]*)?(\?.*)?$/.exec(url);
      if (!m || !NAME.test(m[1]!)) return writeError(res, 404, 'NOT_FOUND', 'use /<credential name>/<upstream path>');
      const body = await bodyOf(req, MAX_LOCAL_BODY);
      if (!body) return writeError(res, 403, 'BODY_TOO_LARGE', 'request body too large');
      const upstream = await client.call(m[1]!, req.method ?? 'GET', `${m[2] ?? '/'}${m[3] ?? ''}`, outgoingHeaders(req.headers, substitutes.all()), body);
      res.writeHead(upstream.statusCode ?? 502, answerHeaders(upstream.headers));
      upstream.pipe(res);
      upstream.on('error', () => res.destroy());
      res.on('close', () => upstream.destroy());
    })().catch((err: unknown) => {
      if (res.headersSent) return void res.destroy();
      const e = err instanceof AgentError ? err : new AgentError('BAD_RESPONSE', String(err));
      writeError(res, 502, e.code, e.message);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: (name) => `http://127.0.0.1:${port}/${checkName(name)}`,
    substitute: (name) => substitutes.of(name),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * `agent.fetch(name, path, init)`: one call through the gateway as a fetch Response (the body streams).
 * A refusal by the gateway (its own answer, over the authenticated channel) throws AgentError with its code.
 */
export async function gatewayFetch(client: GatewayClient, substitutes: Substitutes, name: string, path: string, init: RequestInit = {}): Promise<Response> {
  checkName(name);
  if (!path.startsWith('/')) throw new AgentError('BAD_REQUEST', 'path must start with "/"');
  const method = (init.method ?? 'GET').toUpperCase();
  const body = init.body === undefined || init.body === null ? Buffer.alloc(0) : Buffer.from(await new Response(init.body).arrayBuffer());
  const res = await client.call(name, method, path, outgoingHeaders(new Headers(init.headers), substitutes.all()), body);
  const refusal = res.headers[GATEWAY_ERROR_HEADER];
  if (typeof refusal === 'string') {
    const text = await readAll(res, 64 * 1024);
    let json: unknown = null;
    try {
      json = JSON.parse(text.toString('utf8'));
    } catch {
      json = null;
    }
    throw isBrokerErrorCode(refusal) ? brokerError({ status: res.statusCode ?? 0, json }, 'gateway') : new AgentError('BAD_RESPONSE', `gateway refused (HTTP ${res.statusCode})`);
  }
  const headers = new Headers();
  for (const [k, v] of Object.entries(answerHeaders(res.headers))) for (const one of Array.isArray(v) ? v : [String(v)]) headers.append(k, one);
  const status = res.statusCode ?? 502;
  const noBody = method === 'HEAD' || status === 204 || status === 304;
  if (noBody) res.resume();
  return new Response(noBody ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), { status, headers });
}
