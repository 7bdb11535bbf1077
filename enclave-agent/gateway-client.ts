import { constants, createHash, generateKeyPair, sign, timingSafeEqual, type KeyObject } from 'node:crypto';
import { Agent, request, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import {
  CHALLENGE_NONCE_BYTES,
  CHANNEL_BINDING_BYTES,
  CHANNEL_BINDING_CONTEXT,
  CHANNEL_BINDING_HEADER,
  CHANNEL_BINDING_LABEL,
  GATEWAY_CALL_PREFIX,
  GATEWAY_CHALLENGE_PATH,
  GATEWAY_ERROR_HEADER,
  GATEWAY_TOKEN_HEADER,
  GATEWAY_TOKEN_PATH,
  isBrokerErrorCode,
  type GatewayTokenAnswer,
} from '../broker/protocol/index.js';
import type { Nsm } from '../vsock-shim/nsm/client.js';
import type { Transport } from '../vsock-shim/transport/transport.js';
import { AgentError } from './errors.js';

/** How the agent reaches and recognises the broker's credential gateway (from its measured image). */
export interface GatewayOptions {
  /** The byte stream to the gateway listener: vsock through the parent in production, TCP or Unix socket in tests. */
  readonly transport: Transport;
  /** SHA-256 of the gateway certificate's SubjectPublicKeyInfo (hex or base64): the only key this agent talks to. */
  readonly spkiSha256: string;
  /** TLS server name to send (SNI). Default: none. */
  readonly servername?: string;
  /** Per call, to the broker's answer headers (and per token request). Default 60 s. */
  readonly timeoutMs?: number;
}

const generateRsa = promisify(generateKeyPair);
const MAX_JSON_BYTES = 1024 * 1024;
/** A token is renewed (re-attested) once this fraction of its lifetime has passed. */
const RENEW_AT = 0.8;

/** TLS-level failures (handshake, record integrity): the relay tampered, or this is not the pinned broker. */
function isTlsFailure(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; library?: unknown };
  return (typeof e.code === 'string' && /^ERR_(SSL|TLS)_/.test(e.code)) || e.library === 'SSL routines' || (typeof e.message === 'string' && /\b(SSL|TLS)\b|bad record mac|decrypt/i.test(e.message));
}

function pinOf(text: string): Buffer {
  const pin = text.length === 64 && /^[0-9a-fA-F]+$/.test(text) ? Buffer.from(text, 'hex') : Buffer.from(text, 'base64');
  if (pin.length !== 32) throw new TypeError('gateway.spkiSha256 must be a SHA-256 digest (64 hex characters or base64)');
  return pin;
}

interface CachedToken {
  readonly token: string;
  readonly renewAt: number;
  readonly expiresAt: number;
}

/**
 * The enclave's side of the gateway protocol (broker/protocol/gateway.ts): TLS 1.3 to the pinned gateway
 * key over the agent's transport, each connection bound to the attested key by signing its exporter;
 * gateway tokens per credential, obtained with a fresh attestation and renewed before they expire.
 */
export class GatewayClient {
  readonly #options: GatewayOptions;
  readonly #nsm: Nsm;
  readonly #pin: Buffer;
  readonly #clock: () => number;
  readonly #agent: Agent;
  readonly #bindings = new WeakMap<object, string>();
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<CachedToken>>();
  #key: Promise<{ privateKey: KeyObject; spki: Uint8Array }> | undefined;
  #closed = false;

  constructor(options: GatewayOptions, nsm: Nsm, clock: () => number) {
    this.#options = options;
    this.#nsm = nsm;
    this.#pin = pinOf(options.spkiSha256);
    this.#clock = clock;
    this.#agent = new Agent({ keepAlive: true, maxSockets: 64 });
    // Every connection is TLS to the pinned key over the transport, whatever the URL says.
    (this.#agent as unknown as { createConnection: (o: unknown, cb: (err: Error | null, s?: unknown) => void) => unknown }).createConnection = (_options, callback) => {
      this.#connect().then(
        (socket) => callback(null, socket),
        (err: Error) => callback(err),
      );
      return undefined;
    };
  }

  /** This gateway's own RSA-2048 key (attested as the document's public_key; signs channel bindings only). */
  #keyPair(): Promise<{ privateKey: KeyObject; spki: Uint8Array }> {
    this.#key ??= generateRsa('rsa', { modulusLength: 2048 }).then(({ privateKey, publicKey }) => ({ privateKey, spki: new Uint8Array(publicKey.export({ format: 'der', type: 'spki' })) }));
    return this.#key;
  }

  /** One TLS connection to the pinned gateway, bound to the attested key. */
  async #connect(): Promise<TLSSocket> {
    const { privateKey } = await this.#keyPair();
    const t = this.#options.transport;
    let raw;
    try {
      raw = t.connectAsync ? await t.connectAsync() : t.connect();
    } catch (cause) {
      throw new AgentError('BROKER_UNREACHABLE', `cannot reach the gateway at ${t.description}`, { cause });
    }
    // Chain validation is replaced by the pin: TLS 1.3 proves the peer holds the certificate's key, the pin says which key.
    const socket = tlsConnect({ socket: raw, minVersion: 'TLSv1.3', rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], ...(this.#options.servername ? { servername: this.#options.servername } : {}) });
    raw.resume?.();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new AgentError('BROKER_UNREACHABLE', 'no TLS handshake with the gateway in time')), this.#options.timeoutMs ?? 60_000);
      const fail = (err: unknown): void => {
        clearTimeout(timer);
        socket.destroy();
        reject(err instanceof AgentError ? err : isTlsFailure(err) ? new AgentError('GATEWAY_TLS_FAILED', `TLS with the gateway failed (${(err as Error).message}): the bytes were altered or this is not the gateway`, { cause: err }) : new AgentError('BROKER_UNREACHABLE', `cannot reach the gateway at ${t.description}: ${(err as Error).message}`, { cause: err }));
      };
      const closed = (): void => fail(new AgentError('GATEWAY_TLS_FAILED', 'the gateway connection closed during the TLS handshake'));
      socket.once('error', fail);
      socket.once('close', closed);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.off('error', fail);
        socket.off('close', closed);
        resolve();
      });
    });
    const cert = socket.getPeerX509Certificate();
    const spki = cert ? createHash('sha256').update(cert.publicKey.export({ type: 'spki', format: 'der' })).digest() : Buffer.alloc(32);
    if (!cert || !timingSafeEqual(spki, this.#pin)) {
      socket.destroy();
      throw new AgentError('GATEWAY_UNTRUSTED', 'the gateway certificate key is not the pinned one');
    }
    // RFC 8446 7.5: an empty context is the same as none (RFC 9266).
    const exporter = socket.exportKeyingMaterial(CHANNEL_BINDING_BYTES, CHANNEL_BINDING_LABEL, Buffer.alloc(0));
    const input = Buffer.concat([Buffer.from(CHANNEL_BINDING_CONTEXT, 'utf8'), exporter]);
    this.#bindings.set(socket, sign('sha256', input, { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }).toString('base64url'));
    socket.on('error', () => undefined); // reported through the request using it
    return socket;
  }

  /**
   * Sends one request on a bound connection; resolves with the answer's head (the body streams). Headers
   * are completed once the connection is known: the binding signature is that connection's.
   */
  #send(method: string, path: string, headers: OutgoingHttpHeaders, body: Buffer | undefined): Promise<IncomingMessage> {
    if (this.#closed) return Promise.reject(new AgentError('AGENT_CLOSED', 'the agent is closed'));
    const timeoutMs = this.#options.timeoutMs ?? 60_000;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = request({ agent: this.#agent, method, path, host: this.#options.transport.description, headers: { ...headers, ...(body ? { 'content-length': body.length } : {}) } });
      const timer = setTimeout(() => req.destroy(new AgentError('BROKER_UNREACHABLE', `no answer from the gateway within ${timeoutMs} ms`)), timeoutMs);
      req.once('socket', (socket) => {
        const binding = this.#bindings.get(socket);
        if (!binding) return void req.destroy(new AgentError('GATEWAY_TLS_FAILED', 'the connection is not a bound gateway connection'));
        req.setHeader(CHANNEL_BINDING_HEADER, binding);
        req.end(body);
      });
      req.once('response', (res) => {
        clearTimeout(timer);
        resolve(res);
      });
      req.once('error', (err) => {
        clearTimeout(timer);
        reject(err instanceof AgentError ? err : isTlsFailure(err) ? new AgentError('GATEWAY_TLS_FAILED', `TLS with the gateway failed (${err.message}): the bytes were altered`, { cause: err }) : new AgentError('BROKER_UNREACHABLE', `gateway connection failed: ${err.message}`, { cause: err }));
      });
    });
  }

  async #json(method: string, path: string, body?: unknown): Promise<{ status: number; headers: IncomingHttpHeaders; json: unknown }> {
    const res = await this.#send(method, path, { accept: 'application/json', ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body === undefined ? undefined : Buffer.from(JSON.stringify(body)));
    const text = await readAll(res, MAX_JSON_BYTES);
    try {
      return { status: res.statusCode ?? 0, headers: res.headers, json: JSON.parse(text.toString('utf8')) as unknown };
    } catch (cause) {
      throw new AgentError('BAD_RESPONSE', `gateway answered ${res.statusCode} with a body that is not JSON`, { cause });
    }
  }

  /** A valid token for `name`: cached until renewal, else obtained with a fresh attestation (single flight). */
  async token(name: string): Promise<string> {
    const cached = this.#tokens.get(name);
    const now = this.#clock();
    if (cached && now < cached.renewAt) return cached.token;
    let pending = this.#inflight.get(name);
    if (!pending) {
      pending = this.#obtain(name).finally(() => this.#inflight.delete(name));
      this.#inflight.set(name, pending);
    }
    return (await pending).token;
  }

  async #obtain(name: string): Promise<CachedToken> {
    const started = this.#clock();
    const challenge = await this.#json('GET', GATEWAY_CHALLENGE_PATH);
    const nonceB64 = (challenge.json as { nonce?: unknown } | null)?.nonce;
    if (challenge.status !== 200 || typeof nonceB64 !== 'string') throw brokerError(challenge, 'gateway challenge');
    const nonce = Buffer.from(nonceB64, 'base64');
    if (nonce.length !== CHALLENGE_NONCE_BYTES) throw new AgentError('BAD_RESPONSE', `gateway challenge is not ${CHALLENGE_NONCE_BYTES} bytes`);
    const { spki } = await this.#keyPair();
    let document: Uint8Array;
    try {
      document = await this.#nsm.attest({ nonce, publicKey: spki });
    } catch (cause) {
      throw new AgentError('NSM_ERROR', `the NSM could not attest: ${String(cause)}`, { cause });
    }
    const res = await this.#json('POST', GATEWAY_TOKEN_PATH, { attestation: Buffer.from(document).toString('base64'), name });
    const answer = res.json as Partial<GatewayTokenAnswer> | null;
    if (res.status !== 200 || typeof answer?.token !== 'string' || answer.name !== name || typeof answer.ttlSeconds !== 'number' || !(answer.ttlSeconds > 0)) throw brokerError(res, 'gateway token');
    const lifetime = answer.ttlSeconds * 1000;
    const entry = { token: answer.token, renewAt: started + lifetime * RENEW_AT, expiresAt: started + lifetime };
    this.#tokens.set(name, entry);
    return entry;
  }

  /**
   * One call through the gateway. A token the broker no longer accepts (expired on its clock) is replaced
   * by a freshly attested one and the call sent once more (the body is held, so it can be).
   */
  async call(name: string, method: string, pathAndQuery: string, headers: OutgoingHttpHeaders, body: Buffer): Promise<IncomingMessage> {
    const path = `${GATEWAY_CALL_PREFIX}${name}${pathAndQuery}`;
    const first = await this.#send(method, path, { ...headers, [GATEWAY_TOKEN_HEADER]: await this.token(name) }, body);
    if (first.statusCode !== 401 || first.headers[GATEWAY_ERROR_HEADER] !== 'GATEWAY_TOKEN_INVALID') return first;
    first.resume();
    this.#tokens.delete(name);
    return this.#send(method, path, { ...headers, [GATEWAY_TOKEN_HEADER]: await this.token(name) }, body);
  }

  close(): void {
    this.#closed = true;
    this.#tokens.clear();
    this.#agent.destroy();
  }
}

/** The error an unsuccessful gateway answer stands for: the broker's own code (the channel is authenticated), else BAD_RESPONSE. */
export function brokerError(res: { status: number; json: unknown }, what: string): AgentError {
  const err = (res.json as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  if (!isBrokerErrorCode(err?.code)) return new AgentError('BAD_RESPONSE', `unexpected ${what} answer (HTTP ${res.status})`);
  const message = typeof err.message === 'string' ? err.message.slice(0, 300).replace(/[\u0000-\u001f\u007f]/g, ' ') : `gateway refused (${err.code})`;
  return new AgentError(err.code, message);
}

/** The whole body, up to `max` bytes. */
export function readAll(res: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    res.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > max) {
        res.destroy();
        reject(new AgentError('BAD_RESPONSE', 'gateway answer too large'));
        return;
      }
      chunks.push(chunk);
    });
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', (cause) => reject(isTlsFailure(cause) ? new AgentError('GATEWAY_TLS_FAILED', 'TLS with the gateway failed mid-answer', { cause }) : new AgentError('BROKER_UNREACHABLE', 'gateway connection failed mid-answer', { cause })));
  });
}

export { GATEWAY_ERROR_HEADER };
