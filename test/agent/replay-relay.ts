/**
 * A malicious parent instance for agent tests: an HTTP relay on 127.0.0.1
 * between the enclave agent and a real broker. It forwards, records the
 * challenge reply and the answer that follows it, replays them later, or
 * forges answers signed with the broker's own key (what a broker bug, or a
 * stolen key, could produce) to exercise each of the agent's checks.
 */
import { createHash, createPublicKey } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Decoder, Tag } from 'cbor-x';
import { CompactEncrypt, CompactSign } from 'jose';
import type { SigningKey } from '../../broker/signing-key.js';

/** What the agent sent in a POST /v1/secrets, as the relay sees it. */
export interface SeenRequest {
  readonly names: string[];
  readonly document: Uint8Array;
  readonly nonceHex: string;
  readonly documentSha256: string;
  readonly moduleId: string;
  readonly publicKeyDer: Uint8Array;
}

/** Answers the relay sends instead of the broker's (JSON body of a 200). */
export type Forger = (seen: SeenRequest) => Promise<unknown>;

interface Recorded {
  readonly challenge: Buffer;
  readonly answer: Buffer;
}

const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

/** The fields of an attestation document the relay needs (it trusts nothing; it only reads). */
export function readDocument(document: Uint8Array): Omit<SeenRequest, 'names'> {
  let cose = decoder.decode(document) as unknown;
  if (cose instanceof Tag) cose = cose.value;
  const payload = decoder.decode((cose as Uint8Array[])[2]!) as { module_id: string; nonce: Uint8Array | null; public_key: Uint8Array };
  return {
    document,
    nonceHex: Buffer.from(payload.nonce ?? []).toString('hex'),
    documentSha256: createHash('sha256').update(document).digest('hex'),
    moduleId: payload.module_id,
    publicKeyDer: new Uint8Array(payload.public_key),
  };
}

/** Signs `claims` exactly as the broker's #seal does and encrypts them to the document's key. */
export async function brokerSigned(signingKey: SigningKey, seen: SeenRequest, claims: object, label: { name: string; version: unknown; ttlSeconds: number }): Promise<unknown> {
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'EdDSA', kid: signingKey.kid, typ: 'keygate-release+jws' })
    .sign(signingKey.privateKey);
  const recipient = createPublicKey({ key: Buffer.from(seen.publicKeyDer), format: 'der', type: 'spki' });
  const jwe = await new CompactEncrypt(new TextEncoder().encode(jws))
    .setProtectedHeader({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: 'keygate-release+jws', kid: label.name })
    .encrypt(recipient);
  return { ...label, jwe };
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export class ReplayRelay {
  /** `forward`: pass through (recording); `replay`: answer from the recording; `forge`: real challenges, forged answers. */
  mode: 'forward' | 'replay' | 'forge' = 'forward';
  forger: Forger | undefined;
  recorded: Recorded | undefined;
  /** POST /v1/secrets requests seen, in order. */
  readonly seen: SeenRequest[] = [];
  #lastChallenge: Buffer | undefined;
  readonly #server: Server;
  #port = 0;

  private constructor(private readonly brokerPort: number) {
    this.#server = createServer((req, res) => {
      this.#handle(req, res).catch((err: unknown) => {
        res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'RELAY_FAILED', message: String(err) } }));
      });
    });
  }

  static async start(brokerUrl: string): Promise<ReplayRelay> {
    const relay = new ReplayRelay(Number(new URL(brokerUrl).port));
    await new Promise<void>((r) => relay.#server.listen(0, '127.0.0.1', r));
    relay.#port = (relay.#server.address() as AddressInfo).port;
    return relay;
  }

  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((r) => this.#server.close(() => r()));
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req);
    const send = (status: number, payload: Buffer): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': payload.length });
      res.end(payload);
    };
    if (req.method === 'POST' && req.url === '/v1/secrets') {
      const parsed = JSON.parse(body.toString('utf8')) as { attestation: string; names: string[] };
      this.seen.push({ names: parsed.names, ...readDocument(new Uint8Array(Buffer.from(parsed.attestation, 'base64'))) });
    }
    if (this.mode === 'replay' && this.recorded) {
      if (req.url === '/v1/challenge') return send(200, this.recorded.challenge);
      if (req.url === '/v1/secrets') return send(200, this.recorded.answer);
    }
    if (this.mode === 'forge' && this.forger && req.url === '/v1/secrets') {
      return send(200, Buffer.from(JSON.stringify(await this.forger(this.seen.at(-1)!))));
    }
    const answer = await this.#forward(req, body);
    if (req.url === '/v1/challenge' && answer.status === 200) this.#lastChallenge = answer.body;
    if (req.url === '/v1/secrets' && answer.status === 200 && this.#lastChallenge) this.recorded = { challenge: this.#lastChallenge, answer: answer.body };
    send(answer.status, answer.body);
  }

  #forward(req: IncomingMessage, body: Buffer): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const out = request(
        { host: '127.0.0.1', port: this.brokerPort, method: req.method, path: req.url, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          readBody(res).then((b) => resolve({ status: res.statusCode ?? 0, body: b }), reject);
        },
      );
      out.on('error', reject);
      out.end(body);
    });
  }
}
