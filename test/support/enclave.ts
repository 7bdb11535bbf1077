/** A stand-in enclave for broker tests: an RSA-2048 key, documents minted by a test PKI, and the client side of the protocol. */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { compactDecrypt, compactVerify, importJWK, type JWK } from 'jose';
import { makeDocument, type DocumentSpec } from './document.js';
import type { TestPki } from './pki.js';
import type { ReleasedSecret } from '../../broker/protocol/index.js';
import type { ReleaseClaims } from '../../broker/protocol/index.js';

export const h = (byte: number): string => byte.toString(16).padStart(2, '0').repeat(48);

/** PCRs of the "approved build" used across broker tests: PCR0/1/2 = 0x11/0x22/0x33 repeated. */
export function buildPcrs(pcr0 = 0x11): Map<number, Uint8Array> {
  const m = new Map<number, Uint8Array>();
  for (let i = 0; i < 16; i++) m.set(i, new Uint8Array(48));
  m.set(0, Buffer.from(h(pcr0), 'hex'));
  m.set(1, Buffer.from(h(0x22), 'hex'));
  m.set(2, Buffer.from(h(0x33), 'hex'));
  return m;
}

export const APPROVED = { 0: h(0x11), 1: h(0x22), 2: h(0x33) } as const;

export interface EnclaveResponse {
  status: number;
  body: { secrets?: ReleasedSecret[]; error?: { code: string; message: string } };
}

export class TestEnclave {
  readonly privateKey: KeyObject;
  readonly publicKeyDer: Uint8Array;

  constructor(
    readonly pki: TestPki,
    readonly url: string,
    public pcrs: Map<number, Uint8Array> = buildPcrs(),
  ) {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    this.privateKey = privateKey;
    this.publicKeyDer = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
  }

  async challenge(): Promise<Uint8Array> {
    let res: Response;
    try {
      res = await fetch(`${this.url}/v1/challenge`);
    } catch (err) {
      // A pooled keep-alive connection the server closed just as it was reused (a loaded machine stretches
      // that window, and so does a bench idling past the server's keep-alive timeout, seen as UND_ERR_SOCKET "other
      // side closed"): undici does not retry, and asking for a challenge again is harmless (GET, no state).
      const code = err instanceof TypeError ? (err.cause as { code?: string } | undefined)?.code : undefined;
      if (code !== 'ECONNRESET' && code !== 'UND_ERR_SOCKET') throw err;
      res = await fetch(`${this.url}/v1/challenge`);
    }
    const body = (await res.json()) as { nonce: string };
    return new Uint8Array(Buffer.from(body.nonce, 'base64'));
  }

  /** A document for `nonce` with this enclave's key and PCRs (overridable). */
  document(nonce: Uint8Array | null, overrides: Partial<DocumentSpec> = {}): Uint8Array {
    return makeDocument(this.pki, { timestamp: Date.now(), nonce, publicKey: this.publicKeyDer, pcrs: this.pcrs, ...overrides });
  }

  async post(document: Uint8Array, names: string[]): Promise<EnclaveResponse> {
    const res = await fetch(`${this.url}/v1/secrets`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ attestation: Buffer.from(document).toString('base64'), names }),
    });
    return { status: res.status, body: (await res.json()) as EnclaveResponse['body'] };
  }

  /** challenge -> document -> POST, the whole client flow. */
  async request(names: string[], overrides: Partial<DocumentSpec> = {}): Promise<EnclaveResponse> {
    return this.post(this.document(await this.challenge(), overrides), names);
  }

  /** Decrypts a released item and checks the broker's signature; returns the claims. */
  async open(item: ReleasedSecret, brokerJwk: JWK, key: KeyObject = this.privateKey): Promise<ReleaseClaims> {
    const { plaintext } = await compactDecrypt(item.jwe, key);
    const { payload, protectedHeader } = await compactVerify(new TextDecoder().decode(plaintext), await importJWK(brokerJwk, 'EdDSA'));
    if (protectedHeader.kid !== brokerJwk.kid) throw new Error('kid mismatch');
    return JSON.parse(new TextDecoder().decode(payload)) as ReleaseClaims;
  }
}

export function valueOf(claims: ReleaseClaims): string {
  return Buffer.from(claims.val, 'base64url').toString('utf8');
}
