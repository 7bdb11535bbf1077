import { Hono, type Context } from 'hono';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { JWK } from 'jose';
import { decodeStrict } from './verify/cbor-decode.js';
import { DuplicateKeyError, parseJsonStrict } from './strict-json.js';
import { BrokerError } from './errors.js';
import { HTTP_STATUS } from './http-status.js';
import { validateNames, type ReleaseService } from './release.js';
import type { ChallengeService } from './challenge.js';
import type { BrokerMetrics } from './metrics.js';
import type { Logger } from './log.js';
import { requestLogger } from './http-log.js';
import { bodyLimit, requestBody } from './http-body.js';
import type { ApprovalPendingAnswer, ChallengeAnswer, ErrorAnswer, SecretsAnswer } from './protocol/index.js';
import { parseDelegationRequest } from './delegation/request.js';
import { pendingApprovalsOf } from './approval/pending-error.js';

/** What the HTTP layer needs; everything with state lives behind these. */
export interface BrokerAppDependencies {
  readonly release: ReleaseService;
  readonly challenge: ChallengeService;
  readonly metrics: BrokerMetrics;
  readonly brokerKey: JWK;
  readonly maxBodyBytes: number;
  readonly clock: () => number;
  /** Resolves when the broker can serve (store loaded, key provider reachable, audit writable). */
  readonly ready: () => Promise<void>;
  /** Where the one-line-per-request log goes (none when absent). */
  readonly requestLog?: Logger;
}

function errorResponse(c: Context, err: BrokerError): Response {
  // Human approval pending (202): the error shape plus the requests awaiting approval (broker/protocol/approval.ts).
  const approvals = pendingApprovalsOf(err);
  const body: ErrorAnswer | ApprovalPendingAnswer = approvals ? { error: { code: 'APPROVAL_PENDING', message: err.message }, approvals } : { error: { code: err.code, message: err.message } };
  return c.json(body, HTTP_STATUS[err.code]);
}

/**
 * A 200 JSON answer that no cache keeps. Headers as a plain object: c.header() makes hono build a fetch
 * Headers per request, which the node adapter then walks back into node's form (issue 15).
 */
function noStoreJson(answer: unknown): Response {
  return new Response(JSON.stringify(answer), { status: 200, headers: { 'cache-control': 'no-store', 'content-type': 'application/json' } });
}

function clientOf(c: Context): string {
  try {
    const info = getConnInfo(c);
    return info.remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** As Request.text() decodes a body: UTF-8, a leading byte order mark dropped, bad sequences replaced. */
const utf8 = new TextDecoder();

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Reads `{ attestation, names, delegation? }` from a JSON (base64 document) or CBOR (byte-string document)
 * body; `field` reads any other member (the delegation request's).
 */
async function readReleaseBody(c: Context, maxBodyBytes: number): Promise<{ attestation: Uint8Array; names: string[]; delegation: string | undefined; field: (key: string) => unknown }> {
  const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  let attestation: unknown;
  let names: unknown;
  let field: (key: string) => unknown;
  if (type === 'application/cbor') {
    let body: unknown;
    try {
      // A copy of exactly the body's bytes: the decoded byte strings may be views of it.
      body = decodeStrict(new Uint8Array(await requestBody(c, maxBodyBytes)));
    } catch {
      throw new BrokerError('BAD_REQUEST', 'body is not valid CBOR');
    }
    if (!(body instanceof Map)) throw new BrokerError('BAD_REQUEST', 'body must be a CBOR map');
    attestation = body.get('attestation');
    names = body.get('names');
    field = (key) => body.get(key);
    if (!(attestation instanceof Uint8Array)) throw new BrokerError('BAD_REQUEST', 'attestation must be a byte string');
  } else if (type === 'application/json') {
    let body: unknown;
    try {
      body = parseJsonStrict(utf8.decode(await requestBody(c, maxBodyBytes)));
    } catch (err) {
      throw new BrokerError('BAD_REQUEST', err instanceof DuplicateKeyError ? 'body repeats an object key' : 'body is not valid JSON');
    }
    if (typeof body !== 'object' || body === null) throw new BrokerError('BAD_REQUEST', 'body must be a JSON object');
    const raw = (body as { attestation?: unknown }).attestation;
    names = (body as { names?: unknown }).names;
    const members = body as Record<string, unknown>;
    field = (key) => (Object.hasOwn(members, key) ? members[key] : undefined);
    if (typeof raw !== 'string' || raw.length === 0 || raw.length % 4 !== 0) throw new BrokerError('BAD_REQUEST', 'attestation must be a base64 string');
    const bytes = Buffer.from(raw, 'base64');
    // Text that re-encodes to itself is canonical base64 (what encoders write), which the pattern accepts: proven
    // in a third of the pattern's time over a 6 KB document. Anything else must still match the pattern.
    if (bytes.toString('base64') !== raw && !BASE64.test(raw)) throw new BrokerError('BAD_REQUEST', 'attestation must be a base64 string');
    // A plain Uint8Array over the decoded bytes, no copy (issue 15). Under 4 KB they sit in node's shared Buffer
    // pool, so this view is only ever read through its own offset and length (never `.buffer` alone), and nothing
    // writes it or transfers its buffer.
    attestation = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } else {
    throw new BrokerError('BAD_REQUEST', 'content-type must be application/json or application/cbor');
  }
  const delegation = field('delegation');
  if (delegation !== undefined && typeof delegation !== 'string') throw new BrokerError('BAD_REQUEST', 'delegation must be a string (a delegation token)');
  return { attestation: attestation as Uint8Array, names: validateNames(names), delegation, field };
}

/**
 * The broker's HTTP API (design.md section 2). Every route has a body limit;
 * every failure answers `{ error: { code, message } }` without internal
 * detail; an unexpected exception releases nothing.
 */
export function createBrokerApp(deps: BrokerAppDependencies): Hono {
  const app = new Hono();
  if (deps.requestLog) app.use('*', requestLogger(deps.requestLog, 'api'));
  // Every method but GET and HEAD (which carry no body, and must not make the node adapter build a
  // Request: issue 15, goal 7); POST bodies are read from node's request, never through a fetch Request.
  app.use('*', bodyLimit(deps.maxBodyBytes));

  app.get('/v1/challenge', () => {
    const { nonce, expiresAt } = deps.challenge.issue(deps.clock());
    const answer: ChallengeAnswer = { nonce: Buffer.from(nonce).toString('base64'), expiresAt };
    return noStoreJson(answer);
  });

  app.post('/v1/secrets', async (c) => {
    const { attestation, names, delegation } = await readReleaseBody(c, deps.maxBodyBytes);
    const secrets = await deps.release.release(attestation, names, clientOf(c), delegation);
    const answer: SecretsAnswer = { secrets };
    return noStoreJson(answer);
  });

  app.post('/v1/delegations', async (c) => {
    const { attestation, names, delegation, field } = await readReleaseBody(c, deps.maxBodyBytes);
    const answer = await deps.release.delegate(attestation, parseDelegationRequest(names, field), clientOf(c), delegation);
    return noStoreJson(answer);
  });

  app.get('/v1/broker-key', (c) => c.json(deps.brokerKey));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));

  app.get('/readyz', async (c) => {
    try {
      await deps.ready();
      return c.json({ status: 'ready' });
    } catch (err) {
      return c.json({ status: 'not ready', reason: err instanceof BrokerError ? err.message : 'a dependency is unavailable' }, 503);
    }
  });

  app.get('/metrics', async (c) => c.text(await deps.metrics.render(), 200, { 'content-type': deps.metrics.contentType }));

  // A known route asked with another method is 405 with Allow, not 404 (HEAD is served by the GET routes).
  const allowed: Record<string, string> = { '/v1/challenge': 'GET', '/v1/secrets': 'POST', '/v1/delegations': 'POST', '/v1/broker-key': 'GET', '/healthz': 'GET', '/readyz': 'GET', '/metrics': 'GET' };
  for (const [path, allow] of Object.entries(allowed)) {
    app.all(path, (c) => {
      c.header('allow', allow === 'GET' ? 'GET, HEAD' : allow);
      return errorResponse(c, new BrokerError('METHOD_NOT_ALLOWED', `${path} accepts ${allow} only`));
    });
  }

  app.notFound((c) => errorResponse(c, new BrokerError('NOT_FOUND', 'no such route')));
  app.onError((err, c) => {
    if (err instanceof BrokerError) return errorResponse(c, err);
    return errorResponse(c, new BrokerError('INTERNAL_ERROR', 'internal error; nothing was released'));
  });
  return app;
}
