import { Agent, request } from 'node:http';
import type { Transport } from '../vsock-shim/transport/transport.js';
import { AgentError } from './errors.js';

const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** JSON over HTTP/1.1 on whatever stream the transport opens (TCP, Unix socket, vsock). */
export class BrokerHttp {
  readonly #agent: Agent;

  constructor(
    private readonly transport: Transport,
    private readonly timeoutMs: number,
  ) {
    this.#agent = new Agent({ keepAlive: true, maxSockets: 4 });
    // Every connection comes from the transport, whatever the URL says.
    (this.#agent as unknown as { createConnection: (o: unknown, cb: (err: Error | null, s?: unknown) => void) => unknown }).createConnection = (_options, callback) => {
      if (!transport.connectAsync) return transport.connect();
      transport.connectAsync().then(
        (stream) => {
          callback(null, stream);
          // The tunnel hands the stream over paused so no byte is lost; the HTTP parser is attached now.
          stream.resume();
        },
        (err: Error) => callback(err),
      );
      return undefined;
    };
  }

  /**
   * Sends a request and parses the JSON answer, whatever its status. The
   * whole call (waiting for a pooled socket, connecting, the complete answer)
   * has one deadline: a relay that trickles bytes keeps a socket busy but
   * never idle, so a socket idle timeout alone would let it hang the agent.
   */
  call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    let deadline: NodeJS.Timeout | undefined;
    return new Promise<{ status: number; json: unknown }>((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = request(
        {
          agent: this.#agent,
          method,
          path,
          host: this.transport.description,
          headers: { accept: 'application/json', ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) {
              req.destroy();
              reject(new AgentError('BAD_RESPONSE', 'broker response too large'));
              return;
            }
            chunks.push(chunk);
          });
          res.on('end', () => {
            try {
              resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown });
            } catch (cause) {
              reject(new AgentError('BAD_RESPONSE', `broker answered ${res.statusCode} with a body that is not JSON`, { cause }));
            }
          });
          res.on('error', (cause) => reject(new AgentError('BROKER_UNREACHABLE', 'broker connection failed mid-response', { cause })));
        },
      );
      deadline = setTimeout(() => {
        reject(new AgentError('BROKER_UNREACHABLE', `no complete answer from the broker within ${this.timeoutMs} ms`));
        req.destroy();
      }, this.timeoutMs);
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (cause) => reject(cause instanceof AgentError ? cause : new AgentError('BROKER_UNREACHABLE', `cannot reach the broker at ${this.transport.description}: ${cause.message}`, { cause })));
      req.end(payload);
    }).finally(() => clearTimeout(deadline));
  }

  close(): void {
    this.#agent.destroy();
  }
}
