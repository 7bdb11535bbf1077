import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { KeyObject } from 'node:crypto';
import {
  CHANNEL_BINDING_HEADER,
  GATEWAY_CALL_PREFIX,
  GATEWAY_CHALLENGE_PATH,
  GATEWAY_ERROR_HEADER,
  GATEWAY_TOKEN_HEADER,
  GATEWAY_TOKEN_PATH,
  type BrokerErrorCode,
  type ChallengeAnswer,
  type ErrorAnswer,
  type GatewayTokenAnswer,
} from '../protocol/index.js';
import { HTTP_STATUS } from '../http-status.js';
import { BrokerError } from '../errors.js';
import { CodedError } from '../../lib/coded-error.js';
import { SECRET_NAME } from '../policy/schema.js';
import type { Binding } from '../policy/types.js';
import type { ReleaseService } from '../release.js';
import type { ChallengeService } from '../challenge.js';
import type { SigningKey } from '../signing-key.js';
import { AUDITED_PCRS, AuditUnavailableError, type AuditSink, type DecisionRecord, type GatewayCallRecord } from '../audit/sink.js';
import { identityKeyOf } from '../release/identity.js';
import { parseJsonStrict } from '../strict-json.js';
import { RateLimiter } from '../rate-limit.js';
import { BudgetUnavailableError, type BudgetCounter } from './budget.js';
import { isBound } from './channel.js';
import { callTarget, routeAllowed } from './routes.js';
import { GatewayTokenError, issueGatewayToken, verifyGatewayToken, type GatewayToken } from './token.js';

export interface GatewayDependencies {
  readonly release: ReleaseService;
  readonly challenge: ChallengeService;
  readonly signingKey: SigningKey;
  readonly audit: AuditSink;
  readonly budget: BudgetCounter;
  readonly clock: () => number;
  /** Tests only: PEM CAs the upstream is validated against instead of the system roots. */
  readonly upstreamCa?: string;
  readonly maxTokenSeconds: number;
  readonly upstreamTimeoutMs: number;
  /** The most request-body bytes held at once over all calls (bounds memory: maxConnections x maxBodyBytes may not fit). */
  readonly maxBufferedBodyBytes: number;
}

/** Headers that describe one hop (RFC 9110 7.6.1) or the broker's own protocol: never passed on either way. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'expect']);
const MAX_TOKEN_BODY_BYTES = 64 * 1024;
/**
 * Denied calls of one identity audited individually: 5/s, burst 20. Beyond, they are sampled like
 * unauthenticated junk (appendRefusal): a token holder looping on refused calls (which spend no budget)
 * cannot fill the audit disk. The caller gets the same refusal either way.
 */
const DENIALS_PER_SECOND = 5;
const DENIALS_BURST = 20;
/**
 * Request headers with which common upstream frameworks serve another method or path than the request line
 * names (method override; IIS/Symfony URL rewrite): the allow-list could not speak for such a call.
 */
const ROUTE_OVERRIDE_HEADERS = ['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url'];

/** A refusal of a call: the code the caller is shown, the exact reason audited (and the upstream's status, when it answered). */
class CallRefused extends CodedError<BrokerErrorCode> {
  override readonly name = 'CallRefused';
  constructor(
    shown: BrokerErrorCode,
    readonly reason: string,
    message: string,
    readonly upstreamStatus: number | null = null,
  ) {
    super(shown, message);
  }
}

/** What one call is, as far as it got: what its audit record says. */
interface CallState {
  readonly started: number;
  readonly now: number;
  readonly client: string;
  readonly method: string;
  path: string;
  host: string | null;
  token?: GatewayToken;
  binding?: Binding;
  bytesIn: number;
  /** Body bytes this call holds against maxBufferedBodyBytes (given back when the call ends). */
  reserved: number;
}

/**
 * The broker side of credential substitution (design.md 5b), on its own TLS listener: gateway tokens
 * for attested enclaves, and calls, each re-checked against the current store, limited by route, body
 * size and budget, sent to the upstream over validated TLS with the real credential added, audited
 * before the answer goes out, and streamed back unbuffered.
 */
export class GatewayService {
  readonly #deps: GatewayDependencies;
  readonly #agent: HttpsAgent;
  readonly #publicKey: KeyObject;
  readonly #denials = new RateLimiter(DENIALS_PER_SECOND, DENIALS_BURST);
  /** Request-body bytes reserved by calls in progress. */
  #buffered = 0;

  constructor(deps: GatewayDependencies) {
    this.#deps = deps;
    this.#publicKey = deps.signingKey.publicKey;
    this.#agent = new HttpsAgent({ keepAlive: true, maxSockets: 256, ...(deps.upstreamCa ? { ca: deps.upstreamCa } : {}) });
  }

  /** The node:https request handler of the gateway listener. */
  handle = (req: IncomingMessage, res: ServerResponse): void => {
    this.#route(req, res).catch(() => {
      if (!res.headersSent) this.#answerError(res, 'INTERNAL_ERROR', 'internal error; nothing was forwarded');
      else res.destroy();
    });
  };

  /** Readiness of the budget counter (a shared table: one cheap read). */
  checkBudget(): Promise<void> {
    return this.#deps.budget.check();
  }

  close(): void {
    this.#agent.destroy();
    this.#deps.budget.close();
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    if (url.startsWith(GATEWAY_CALL_PREFIX)) return this.#call(req, res, url.slice(GATEWAY_CALL_PREFIX.length));
    if (url === GATEWAY_CHALLENGE_PATH && req.method === 'GET') {
      const { nonce, expiresAt } = this.#deps.challenge.issue(this.#deps.clock());
      const answer: ChallengeAnswer = { nonce: Buffer.from(nonce).toString('base64'), expiresAt };
      return this.#json(res, 200, answer);
    }
    if (url === GATEWAY_TOKEN_PATH && req.method === 'POST') return this.#token(req, res);
    req.resume();
    this.#answerError(res, url === GATEWAY_CHALLENGE_PATH || url === GATEWAY_TOKEN_PATH ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND', 'no such gateway route');
  }

  /** `POST /v1/gateway/token`: a fresh attestation in, a token bound to its key out (ReleaseService.admitGateway decides and audits). */
  async #token(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const body = await readBody(req, MAX_TOKEN_BODY_BYTES);
      if (body === undefined) throw new BrokerError('PAYLOAD_TOO_LARGE', `body larger than ${MAX_TOKEN_BODY_BYTES} bytes`);
      let parsed: unknown;
      try {
        parsed = parseJsonStrict(body.toString('utf8'));
      } catch {
        throw new BrokerError('BAD_REQUEST', 'body is not valid JSON');
      }
      const { attestation, name } = (parsed ?? {}) as { attestation?: unknown; name?: unknown };
      if (typeof attestation !== 'string' || attestation.length === 0 || attestation.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(attestation)) throw new BrokerError('BAD_REQUEST', 'attestation must be a base64 string');
      if (typeof name !== 'string' || !SECRET_NAME.test(name)) throw new BrokerError('BAD_REQUEST', 'name must be a secret name');
      const admission = await this.#deps.release.admitGateway(new Uint8Array(Buffer.from(attestation, 'base64')), [name], clientOf(req));
      const binding = admission.bindings[0]!;
      const ttlSeconds = Math.min(binding.ttlSeconds, this.#deps.maxTokenSeconds);
      // The document's public_key verified as RSA-2048 in admitGateway (the same step as for a release).
      const token = await issueGatewayToken(this.#deps.signingKey, { name, identity: admission.identity, docSha256: admission.doc.documentSha256, spki: admission.doc.publicKey!, ttlSeconds, now: admission.now });
      const answer: GatewayTokenAnswer = { token, name, ttlSeconds };
      this.#json(res, 200, answer);
    } catch (err) {
      if (err instanceof BrokerError) return this.#answerError(res, err.code, err.message);
      throw err;
    }
  }

  /** One call: authenticate, authorise, forward, audit, stream back. */
  async #call(req: IncomingMessage, res: ServerResponse, rest: string): Promise<void> {
    const s: CallState = { started: performance.now(), now: this.#deps.clock(), client: clientOf(req), method: req.method ?? 'GET', path: '/', host: null, bytesIn: 0, reserved: 0 };
    const target = callTarget(rest);
    if (target) s.path = target.path;
    // Who is calling: a valid token, on a connection bound to its key. Until then nothing is known of the
    // caller, so refusals are sampled (appendRefusal) like any unauthenticated junk.
    const header = req.headers[GATEWAY_TOKEN_HEADER];
    let token: GatewayToken;
    try {
      if (typeof header !== 'string') throw new GatewayTokenError('TOKEN_MISSING');
      token = await verifyGatewayToken(header, this.#publicKey, s.now);
    } catch (err) {
      if (!(err instanceof GatewayTokenError)) throw err;
      return this.#refuseUnauthenticated(req, res, s, new CallRefused('GATEWAY_TOKEN_INVALID', `GATEWAY_TOKEN_INVALID:${err.reason}`, 'no valid gateway token; obtain one with a fresh attestation'));
    }
    if (!isBound(req.socket as TLSSocket, token.key, token.keyId, headerOf(req.headers, CHANNEL_BINDING_HEADER))) {
      return this.#refuseUnauthenticated(req, res, s, new CallRefused('CHANNEL_BINDING_INVALID', 'CHANNEL_BINDING_INVALID', 'this connection is not bound to the key the gateway token names'));
    }
    s.token = token;
    try {
      await this.#authoriseAndForward(req, res, s, target);
    } catch (caught) {
      // Anything unexpected once the caller is known is still this call's one audit record (fail closed).
      const err = caught instanceof CallRefused ? caught : new CallRefused('INTERNAL_ERROR', `INTERNAL_ERROR:${(caught as Error).name}`, 'internal error; nothing was forwarded');
      if (res.headersSent) return void res.destroy();
      req.resume();
      const individually = this.#denials.take(identityKeyOf(token.identity), s.now);
      await this.#audited(res, s, 'deny', err.reason, err.upstreamStatus, null, () => this.#answerError(res, err.code, err.message), individually);
    } finally {
      this.#buffered -= s.reserved;
    }
  }

  async #authoriseAndForward(req: IncomingMessage, res: ServerResponse, s: CallState, target: ReturnType<typeof callTarget>): Promise<void> {
    const token = s.token!;
    if (!target) throw new CallRefused('ROUTE_DENIED', 'UNSAFE_PATH', 'the path is not one an allow-list can name (dot or empty segments, encoded slashes, other characters)');
    if (target.name !== token.name) throw new CallRefused('GATEWAY_TOKEN_INVALID', 'TOKEN_WRONG_CREDENTIAL', `the gateway token is for another credential`);
    // The current store, on every call: revocation stops calls at once, a rotation takes effect now.
    const decision = await this.#deps.release.gatewayDecision(token.identity, token.name);
    if (!decision.ok) throw new CallRefused(decision.shown, decision.reason, decision.shown === 'REVOKED' ? 'this enclave identity is revoked' : 'not allowed to use this credential');
    const binding = decision.binding;
    const inject = binding.inject!;
    s.binding = binding;
    s.host = new URL(inject.upstream).host;
    if (!routeAllowed(inject.routes, s.method, target.path)) throw new CallRefused('ROUTE_DENIED', 'ROUTE_DENIED', `${s.method} ${target.path} is not an allowed route for this credential`);
    const override = ROUTE_OVERRIDE_HEADERS.find((h) => req.headers[h] !== undefined);
    if (override) throw new CallRefused('ROUTE_DENIED', 'ROUTE_OVERRIDE', `the ${override} header would have the upstream serve another method or path than the allow-list names`);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (!Number.isFinite(declared) || declared > inject.maxBodyBytes) throw new CallRefused('BODY_TOO_LARGE', 'BODY_TOO_LARGE', `the request body is larger than ${inject.maxBodyBytes} bytes`);
    // Bodies are held whole (the limit is checked before anything is sent): memory for them is reserved up
    // front, a chunked body at its largest, and kept until the call ends.
    const reserve = req.headers['transfer-encoding'] === undefined ? declared : inject.maxBodyBytes;
    if (this.#buffered + reserve > this.#deps.maxBufferedBodyBytes) throw new CallRefused('RATE_LIMITED', 'BODIES_IN_FLIGHT', 'the gateway holds too many request bodies at once; retry shortly');
    this.#buffered += reserve;
    s.reserved = reserve;
    const body = await readBody(req, inject.maxBodyBytes);
    if (body === undefined) throw new CallRefused('BODY_TOO_LARGE', 'BODY_TOO_LARGE', `the request body is larger than ${inject.maxBodyBytes} bytes`);
    s.bytesIn = body.length;
    // The budget is spent only by calls nothing else refuses.
    const windowMs = inject.budget.windowSeconds * 1000;
    const windowStart = Math.floor(s.now / windowMs) * windowMs;
    let counted: boolean;
    try {
      counted = await this.#deps.budget.take(`${token.name}#${identityKeyOf(token.identity)}`, windowStart, windowMs, inject.budget.requests);
    } catch (err) {
      if (!(err instanceof BudgetUnavailableError)) throw err;
      throw new CallRefused('STORE_UNAVAILABLE', `STORE_UNAVAILABLE:budgets:${err.storeError}`, 'the shared budget counter is unavailable; nothing was forwarded');
    }
    if (!counted) throw new CallRefused('BUDGET_EXCEEDED', 'BUDGET_EXCEEDED', `over budget: ${inject.budget.requests} calls per ${inject.budget.windowSeconds} s for this enclave identity`);
    let credential: string;
    try {
      const value = await this.#deps.release.gatewayValue(binding, s.now, decision.generation);
      // split/join, not replace: a `$&` in a key must not be read as a replacement pattern. latin1: one
      // character per byte, and node:http writes header strings as latin1, so the key goes out byte for byte.
      credential = inject.template.split('{value}').join(Buffer.from(value).toString('latin1'));
      value.fill(0);
    } catch (err) {
      const name = (err as { providerError?: string; name?: string }).providerError ?? (err as Error).name;
      const code = (err as Error).name === 'SecretUnavailableError' ? 'SECRET_UNAVAILABLE' : 'KMS_UNAVAILABLE';
      throw new CallRefused(code, `${code}:${name}`, 'the credential cannot be decrypted; nothing was forwarded');
    }
    // A value that cannot travel in a header (CR, LF, other controls) would split it: refused, never sent.
    if (!/^[\t\x20-\x7e\x80-\xff]*$/.test(credential)) throw new CallRefused('SECRET_UNAVAILABLE', 'SECRET_UNAVAILABLE:NotAHeaderValue', 'the credential cannot be sent in a header; nothing was forwarded');
    await this.#forward(req, res, s, target.path + target.query, body, credential);
  }

  /** Sends the call upstream; its answer is audited, then streamed back as it arrives. */
  async #forward(req: IncomingMessage, res: ServerResponse, s: CallState, pathAndQuery: string, body: Buffer, credential: string): Promise<void> {
    const inject = s.binding!.inject!;
    const headers: OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || HOP_BY_HOP.has(name) || name.startsWith('keygate-') || name === inject.header) continue;
      headers[name] = value;
    }
    headers[inject.header] = credential;
    if (body.length || !['GET', 'HEAD', 'DELETE'].includes(s.method)) headers['content-length'] = body.length;
    const upstream = await new Promise<IncomingMessage>((resolve, reject) => {
      const out = httpsRequest(new URL(pathAndQuery, inject.upstream), { method: s.method, headers, agent: this.#agent, timeout: this.#deps.upstreamTimeoutMs });
      out.on('response', resolve);
      out.on('timeout', () => out.destroy(Object.assign(new Error('upstream timed out'), { code: 'ETIMEDOUT' })));
      out.on('error', (err: NodeJS.ErrnoException) => reject(new CallRefused('UPSTREAM_UNAVAILABLE', `UPSTREAM_UNAVAILABLE:${err.code ?? err.name}`, `the upstream ${s.host} could not be reached (${err.code ?? err.name})`)));
      // The client going away ends the upstream call too.
      res.on('close', () => out.destroy());
      out.end(body);
    });
    const status = upstream.statusCode ?? 502;
    if (inject.allowStatus && !inject.allowStatus.includes(status)) {
      upstream.destroy();
      throw new CallRefused('UPSTREAM_STATUS_DENIED', 'UPSTREAM_STATUS_DENIED', `the upstream answered ${status}, which this credential's policy does not pass on`, status);
    }
    const declared = upstream.headers['content-length'] === undefined ? null : Number(upstream.headers['content-length']);
    const sent = await this.#audited(res, s, 'call', 'FORWARDED', status, Number.isFinite(declared) ? declared : null, () => {
      res.writeHead(status, passOn(upstream.headers));
      upstream.pipe(res);
      upstream.on('error', () => res.destroy());
    });
    if (!sent) upstream.destroy();
  }

  /**
   * Writes the call's one audit record, then (only once it is durable) answers with `send`. A record that
   * cannot be written answers INTERNAL_ERROR / STORE_UNAVAILABLE instead and nothing is passed on. A denial
   * past the identity's individual rate (`individually` false) is sampled (appendRefusal).
   */
  async #audited(res: ServerResponse, s: CallState, decision: 'call' | 'deny', code: string, status: number | null, bytesOut: number | null, send: () => void, individually = true): Promise<boolean> {
    try {
      const record = this.#record(s, decision, code, status, bytesOut);
      await (individually ? this.#deps.audit.append(record) : this.#deps.audit.appendRefusal(record));
    } catch (err) {
      const shared = err instanceof AuditUnavailableError && err.storeError !== undefined;
      this.#answerError(res, shared ? 'STORE_UNAVAILABLE' : 'INTERNAL_ERROR', 'the call could not be audited; nothing was passed on');
      return false;
    }
    send();
    return true;
  }

  async #refuseUnauthenticated(req: IncomingMessage, res: ServerResponse, s: CallState, refused: CallRefused): Promise<void> {
    req.resume();
    try {
      await this.#deps.audit.appendRefusal(this.#record(s, 'deny', refused.reason, null, null));
    } catch {
      return this.#answerError(res, 'INTERNAL_ERROR', 'the call could not be audited');
    }
    this.#answerError(res, refused.code, refused.message);
  }

  #record(s: CallState, decision: DecisionRecord['decision'], code: string, status: number | null, bytesOut: number | null): DecisionRecord {
    const identity = s.token?.identity;
    const gateway: GatewayCallRecord = { jti: s.token?.jti ?? '', method: s.method.slice(0, 16), host: s.host ?? '', path: s.path, status, bytesIn: s.bytesIn, bytesOut };
    return {
      time: new Date(s.now).toISOString(),
      decision,
      code,
      secret: s.token?.name ?? null,
      version: s.binding?.version ?? null,
      moduleId: identity?.moduleId ?? null,
      pcrs: identity ? Object.fromEntries(AUDITED_PCRS.flatMap((i) => (identity.pcrs[i] === undefined ? [] : [[i, identity.pcrs[i]]]))) : null,
      docSha256: s.token?.docSha256 ?? null,
      nonce: null,
      client: s.client,
      latencyMs: Math.round((performance.now() - s.started) * 1000) / 1000,
      gateway,
    };
  }

  #json(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  #answerError(res: ServerResponse, code: BrokerErrorCode, message: string): void {
    if (res.headersSent) return void res.destroy();
    const body: ErrorAnswer = { error: { code, message } };
    const text = JSON.stringify(body);
    res.writeHead(HTTP_STATUS[code], { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text), [GATEWAY_ERROR_HEADER]: code });
    res.end(text);
  }
}

/** The upstream's answer headers, minus hop-by-hop ones and anything claiming to be the gateway's own. */
function passOn(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || (HOP_BY_HOP.has(name) && name !== 'content-length') || name.startsWith('keygate-')) continue;
    out[name] = value;
  }
  return out;
}

function headerOf(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return typeof v === 'string' ? v : undefined;
}

function clientOf(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? 'unknown';
}

/** The whole body, or undefined once it exceeds `max` bytes (reading stops there). */
function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > max) {
        req.off('data', onData);
        req.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    req.on('data', onData);
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
