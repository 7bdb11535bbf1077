/**
 * A small AWS KMS stand-in speaking the JSON 1.1 wire protocol
 * (POST /, X-Amz-Target: TrentService.<Op>, base64 blobs), listening on
 * 127.0.0.1 only, with switches to inject throttling, internal errors,
 * latency and outages, key states (disable, enable, schedule deletion,
 * delete) answered with the real permanent error types, and DescribeKey.
 * The real @aws-sdk/client-kms talks to it.
 *
 * Decrypt with `Recipient` works as AWS documents it: the attestation
 * document must verify (against `attestationRoots`; none configured: every
 * document is refused), its public_key must be RSA-2048, and the answer
 * carries CiphertextForRecipient (a BER CMS EnvelopedData to that key, see
 * recipient-cms.ts) and no Plaintext. `recipient.answer` makes it misbehave.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createCipheriv, createDecipheriv, createPublicKey, generateKeyPairSync, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import type { AddressInfo, Socket } from 'node:net';
import { verifyAttestation } from '../../broker/verify/index.js';
import { buildRecipientEnvelope } from './recipient-cms.js';

/**
 * How Decrypt answers a `Recipient`: `cms` as AWS does; `plaintext` as moto (ignores Recipient);
 * `both` Plaintext and CiphertextForRecipient; `none` neither; `wrong-key` a CMS to another RSA key.
 */
export type RecipientAnswer = 'cms' | 'plaintext' | 'both' | 'none' | 'wrong-key';

export interface KmsServerOptions {
  /** PEM roots attestation documents in `Recipient` must chain to (the NSM simulator's or a test PKI's). */
  readonly attestationRoots?: readonly string[];
}

export interface KmsFaults {
  /** Answer the next N requests with ThrottlingException (400). */
  throttle: number;
  /** Answer the next N requests with KMSInternalException (500). */
  internal: number;
  /** Delay every answer by this many milliseconds. */
  latencyMs: number;
  /** Drop every connection without answering. */
  outage: boolean;
  /** Answer the next N requests with AccessDeniedException (400). */
  accessDenied: number;
}

/** What DescribeKey reports; Disabled keys answer DisabledException, PendingDeletion ones KMSInvalidStateException. */
export type KeyState = 'Enabled' | 'Disabled' | 'PendingDeletion';

export interface KmsTestServer {
  readonly endpoint: string;
  readonly keyId: string;
  readonly faults: KmsFaults;
  /** Requests seen per operation (faulted ones included). */
  readonly calls: Map<string, number>;
  /** Decrypt with Recipient: how it answers, and how many such requests were answered with a CMS. */
  readonly recipient: { answer: RecipientAnswer; envelopes: number };
  createKey(): string;
  disableKey(keyId: string): void;
  enableKey(keyId: string): void;
  scheduleKeyDeletion(keyId: string): void;
  /** The key is gone: requests naming it answer NotFoundException. */
  deleteKey(keyId: string): void;
  close(): Promise<void>;
}

const REGION = 'us-east-1';
const ACCOUNT = '111122223333';

function contextBytes(context: unknown): Buffer {
  const entries = Object.entries((context ?? {}) as Record<string, string>).sort(([a], [b]) => (a < b ? -1 : 1));
  return Buffer.from(JSON.stringify(entries));
}

export async function startKmsServer(options: KmsServerOptions = {}): Promise<KmsTestServer> {
  const keys = new Map<string, Buffer>();
  const states = new Map<string, KeyState>();
  const faults: KmsFaults = { throttle: 0, internal: 0, latencyMs: 0, outage: false, accessDenied: 0 };
  const calls = new Map<string, number>();
  const sockets = new Set<Socket>();
  const recipient: KmsTestServer['recipient'] = { answer: 'cms', envelopes: 0 };
  let otherKey: KeyObject | undefined;

  const createKey = (): string => {
    const id = randomUUID();
    keys.set(id, randomBytes(32));
    states.set(id, 'Enabled');
    return id;
  };
  const setState = (keyId: string, state: KeyState): void => {
    if (!keys.has(keyId)) throw new Error(`no test key ${keyId}`);
    states.set(keyId, state);
  };
  const resolveKey = (keyId: unknown): string | undefined => {
    if (typeof keyId !== 'string') return undefined;
    const id = keyId.replace(/^arn:aws:kms:[^:]+:\d+:key\//, '');
    return keys.has(id) ? id : undefined;
  };
  const arn = (id: string): string => `arn:aws:kms:${REGION}:${ACCOUNT}:key/${id}`;

  const encrypt = (id: string, plaintext: Buffer, context: unknown): Buffer => {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', keys.get(id)!, iv);
    cipher.setAAD(contextBytes(context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    const idBytes = Buffer.from(id);
    return Buffer.concat([Buffer.of(idBytes.length), idBytes, iv, cipher.getAuthTag(), body]);
  };

  type Handler = (body: Record<string, unknown>) => [number, Record<string, unknown>];
  const fail = (status: number, type: string, message: string): [number, Record<string, unknown>] => [status, { __type: type, message }];
  /** How real KMS refuses to use a key that is not Enabled (undefined: usable). */
  const unusable = (id: string): [number, Record<string, unknown>] | undefined => {
    const state = states.get(id);
    if (state === 'Disabled') return fail(400, 'DisabledException', `${arn(id)} is disabled.`);
    if (state === 'PendingDeletion') return fail(400, 'KMSInvalidStateException', `${arn(id)} is pending deletion.`);
    return undefined;
  };
  /** The Recipient part of Decrypt: the document must verify and carry an RSA-2048 key; the answer is encrypted to it. */
  const forRecipient = (r: unknown, plaintext: Buffer, id: string): [number, Record<string, unknown>] => {
    const { KeyEncryptionAlgorithm: algorithm, AttestationDocument: document } = (r ?? {}) as Record<string, unknown>;
    if (algorithm !== 'RSAES_OAEP_SHA_256') return fail(400, 'ValidationException', 'Recipient.KeyEncryptionAlgorithm must be RSAES_OAEP_SHA_256');
    let key: KeyObject;
    try {
      const doc = verifyAttestation(Buffer.from(String(document), 'base64'), { at: Date.now(), roots: options.attestationRoots ?? [], maxAgeMs: 5 * 60_000, allowDebug: true });
      key = createPublicKey({ key: Buffer.from(doc.publicKey!), format: 'der', type: 'spki' });
      if (key.asymmetricKeyType !== 'rsa' || key.asymmetricKeyDetails?.modulusLength !== 2048) throw new Error('not RSA-2048');
    } catch {
      return fail(400, 'ValidationException', 'Recipient.AttestationDocument is not a valid attestation document with an RSA-2048 public key');
    }
    const answer = recipient.answer;
    const common = { KeyId: arn(id), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' };
    if (answer === 'plaintext') return [200, { ...common, Plaintext: plaintext.toString('base64') }];
    if (answer === 'none') return [200, common];
    if (answer === 'wrong-key') otherKey ??= generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    const { ber } = buildRecipientEnvelope(plaintext, answer === 'wrong-key' ? otherKey! : key, { chunk: 256 });
    recipient.envelopes++;
    return [200, { ...common, CiphertextForRecipient: ber.toString('base64'), ...(answer === 'both' ? { Plaintext: plaintext.toString('base64') } : {}) }];
  };

  const ops: Record<string, Handler> = {
    Encrypt: (b) => {
      const id = resolveKey(b.KeyId);
      if (!id) return fail(400, 'NotFoundException', 'key not found');
      const refused = unusable(id);
      if (refused) return refused;
      const ct = encrypt(id, Buffer.from(String(b.Plaintext), 'base64'), b.EncryptionContext);
      return [200, { CiphertextBlob: ct.toString('base64'), KeyId: arn(id), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' }];
    },
    Decrypt: (b) => {
      const blob = Buffer.from(String(b.CiphertextBlob), 'base64');
      const idLen = blob[0] ?? 0;
      const id = blob.subarray(1, 1 + idLen).toString();
      if (b.KeyId !== undefined && !resolveKey(b.KeyId)) return fail(400, 'NotFoundException', 'key not found');
      if (!keys.has(id)) return fail(400, 'InvalidCiphertextException', 'unknown key');
      if (b.KeyId !== undefined && resolveKey(b.KeyId) !== id) return fail(400, 'IncorrectKeyException', 'wrong key');
      const refused = unusable(id);
      if (refused) return refused;
      const rest = blob.subarray(1 + idLen);
      try {
        const decipher = createDecipheriv('aes-256-gcm', keys.get(id)!, rest.subarray(0, 12));
        decipher.setAAD(contextBytes(b.EncryptionContext));
        decipher.setAuthTag(rest.subarray(12, 28));
        const pt = Buffer.concat([decipher.update(rest.subarray(28)), decipher.final()]);
        if (b.Recipient !== undefined) return forRecipient(b.Recipient, pt, id);
        return [200, { Plaintext: pt.toString('base64'), KeyId: arn(id), EncryptionAlgorithm: 'SYMMETRIC_DEFAULT' }];
      } catch {
        return fail(400, 'InvalidCiphertextException', 'ciphertext or encryption context does not match');
      }
    },
    GenerateDataKey: (b) => {
      const id = resolveKey(b.KeyId);
      if (!id) return fail(400, 'NotFoundException', 'key not found');
      const refused = unusable(id);
      if (refused) return refused;
      const size = b.KeySpec === 'AES_128' ? 16 : Number(b.NumberOfBytes ?? 32);
      const plaintext = randomBytes(size);
      return [200, { Plaintext: plaintext.toString('base64'), CiphertextBlob: encrypt(id, plaintext, b.EncryptionContext).toString('base64'), KeyId: arn(id) }];
    },
    GenerateRandom: (b) => [200, { Plaintext: randomBytes(Number(b.NumberOfBytes ?? 32)).toString('base64') }],
    DescribeKey: (b) => {
      const id = resolveKey(b.KeyId);
      if (!id) return fail(400, 'NotFoundException', 'key not found');
      const state = states.get(id)!;
      return [
        200,
        {
          KeyMetadata: {
            AWSAccountId: ACCOUNT,
            KeyId: id,
            Arn: arn(id),
            CreationDate: 1_700_000_000,
            Enabled: state === 'Enabled',
            KeyState: state,
            KeyUsage: 'ENCRYPT_DECRYPT',
            KeySpec: 'SYMMETRIC_DEFAULT',
            KeyManager: 'CUSTOMER',
            Origin: 'AWS_KMS',
            ...(state === 'PendingDeletion' ? { DeletionDate: Math.floor(Date.now() / 1000) + 7 * 86_400 } : {}),
          },
        },
      ];
    },
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const target = String(req.headers['x-amz-target'] ?? '');
    const op = target.replace(/^TrentService\./, '');
    calls.set(op, (calls.get(op) ?? 0) + 1);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (faults.outage) {
      req.socket.destroy();
      return;
    }
    // Faults are decided when the request arrives, so a slow request never consumes a fault set after it.
    let status: number;
    let body: Record<string, unknown>;
    if (faults.throttle > 0) {
      faults.throttle--;
      [status, body] = fail(400, 'ThrottlingException', 'Rate exceeded');
    } else if (faults.internal > 0) {
      faults.internal--;
      [status, body] = fail(500, 'KMSInternalException', 'internal error');
    } else if (faults.accessDenied > 0) {
      faults.accessDenied--;
      [status, body] = fail(400, 'AccessDeniedException', 'User is not authorized to perform this operation');
    } else if (req.method !== 'POST' || !target.startsWith('TrentService.') || !ops[op]) {
      [status, body] = fail(400, 'UnknownOperationException', `unknown operation ${target}`);
    } else {
      try {
        [status, body] = ops[op]!(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>);
      } catch {
        [status, body] = fail(400, 'SerializationException', 'bad request body');
      }
    }
    if (faults.latencyMs) await new Promise((r) => setTimeout(r, faults.latencyMs));
    if (res.destroyed) return;
    const payload = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomUUID(), 'content-length': Buffer.byteLength(payload) });
    res.end(payload);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => res.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    keyId: createKey(),
    faults,
    calls,
    recipient,
    createKey,
    disableKey: (id) => setState(id, 'Disabled'),
    enableKey: (id) => setState(id, 'Enabled'),
    scheduleKeyDeletion: (id) => setState(id, 'PendingDeletion'),
    deleteKey: (id) => {
      keys.delete(id);
      states.delete(id);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Static test credentials: the SDK signs requests, the test server ignores signatures. */
export const TEST_CREDENTIALS = { accessKeyId: 'AKIDTESTKEYGATE', secretAccessKey: 'test-secret-key' };
