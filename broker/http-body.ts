import type { IncomingMessage } from 'node:http';
import type { Context, MiddlewareHandler } from 'hono';
import { BrokerError } from './errors.js';

/**
 * Request bodies with a byte limit, read straight from node's IncomingMessage when the app is served by
 * @hono/node-server (c.env.incoming). hono's bodyLimit asks for c.req.raw.body, which makes the node
 * adapter build a full fetch Request, a web ReadableStream over the socket and an AbortSignal for every
 * POST (issue 15: ~70 µs of CPU per release, and garbage). The limit is the same: a declared
 * Content-Length over it is refused before a byte is read, a streamed (chunked) body is counted while
 * it arrives and refused as soon as it passes the limit. Served another way (app.request in tests, or a
 * fetch runtime), the web body is read with the same limit.
 */

function tooLarge(maxBytes: number): BrokerError {
  return new BrokerError('PAYLOAD_TOO_LARGE', `body larger than ${maxBytes} bytes`);
}

function cutOff(): BrokerError {
  return new BrokerError('BAD_REQUEST', 'the request body ended early (the client closed the connection)');
}

/** The node request behind `c`, when @hono/node-server serves the app. */
function incomingOf(c: Context): IncomingMessage | undefined {
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming;
  return incoming !== null && typeof incoming === 'object' && typeof (incoming as IncomingMessage).on === 'function' && typeof (incoming as IncomingMessage).headers === 'object'
    ? (incoming as IncomingMessage)
    : undefined;
}

/** Bodies already read by the limit middleware (streamed bodies are read before the route runs, as bodyLimit did). */
const readAhead = new WeakMap<Context, Uint8Array>();

/** Reads a node request body, refusing it once more than `maxBytes` have arrived. */
function readIncoming(incoming: IncomingMessage, maxBytes: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    // Nobody else reads the body; a request already torn down (client gone) would never emit again.
    if (incoming.destroyed || incoming.readableEnded) {
      reject(cutOff());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    // 'end' (the whole body), 'error' or 'close' before the end (the client went away): one listener for all three.
    const settle = (): void => {
      incoming.off('data', onData);
      incoming.off('end', settle);
      incoming.off('error', settle);
      incoming.off('close', settle);
      if (size > maxBytes) reject(tooLarge(maxBytes));
      else if (incoming.readableEnded) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
      else reject(cutOff());
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      // Over the limit: stop keeping bytes; the adapter drains (bounded) or closes the connection once the 413 is sent.
      if (size > maxBytes) settle();
      else chunks.push(chunk);
    };
    incoming.on('data', onData);
    incoming.on('end', settle);
    incoming.on('error', settle);
    incoming.on('close', settle);
  });
}

/** Reads a web request body (not served by node), with the same limit. */
async function readWeb(request: Request, maxBytes: number): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}

/** A request header by its lower-case name, from node's parsed headers when there are. */
function headerOf(c: Context, incoming: IncomingMessage | undefined, name: 'content-length' | 'transfer-encoding'): string | undefined {
  if (incoming) return incoming.headers[name];
  return c.req.raw.headers.get(name) ?? undefined;
}

/**
 * The body limit for every method but GET and HEAD (they carry no body), as hono's bodyLimit: a
 * Content-Length over the limit is refused up front; a body without one (chunked) is read now, counted
 * as it arrives, and kept for the route.
 *
 * @throws BrokerError PAYLOAD_TOO_LARGE (answered by the app's error handler)
 */
export function bodyLimit(maxBytes: number): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const incoming = incomingOf(c);
    const length = headerOf(c, incoming, 'content-length');
    if (length !== undefined && headerOf(c, incoming, 'transfer-encoding') === undefined) {
      if (parseInt(length, 10) > maxBytes) throw tooLarge(maxBytes);
      return next();
    }
    readAhead.set(c, incoming ? await readIncoming(incoming, maxBytes) : await readWeb(c.req.raw, maxBytes));
    return next();
  };
}

/**
 * The request body (at most `maxBytes`; node's parser delivers exactly the declared Content-Length),
 * read once. The bytes may share memory with other buffers: copy before keeping a view of them.
 *
 * @throws BrokerError PAYLOAD_TOO_LARGE, or BAD_REQUEST when the client closed the connection mid-body
 */
export async function requestBody(c: Context, maxBytes: number): Promise<Uint8Array> {
  const ahead = readAhead.get(c);
  if (ahead) return ahead;
  const incoming = incomingOf(c);
  return incoming ? readIncoming(incoming, maxBytes) : readWeb(c.req.raw, maxBytes);
}
