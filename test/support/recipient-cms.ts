/**
 * Builds KMS's CiphertextForRecipient as AWS documents it, for the KMS test
 * server: a BER ContentInfo / EnvelopedData v2 (indefinite lengths), one
 * KeyTransRecipientInfo v2 with a 32-byte subjectKeyIdentifier, RSAES-OAEP
 * (SHA-256, MGF1-SHA-256) key transport of a fresh AES-256 key, and
 * AES-256-CBC content in chunks. Written independently of the agent's reader
 * (enclave-agent/cms.ts): a shared encoder would hide a shared mistake;
 * OpenSSL cross-checks both (test/agent/cms.test.ts).
 */
import { constants, createCipheriv, createHash, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';

/** A definite-length element. */
export function der(tag: number, contents: Uint8Array): Buffer {
  const n = contents.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : n < 0x10000 ? [0x82, n >> 8, n & 0xff] : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), contents]);
}

/** A constructed element with indefinite length (BER), as KMS sends the outer layers. */
export function indefinite(tag: number, ...children: Uint8Array[]): Buffer {
  return Buffer.concat([Buffer.from([tag, 0x80]), ...children, Buffer.from([0, 0])]);
}

const seq = (...children: Uint8Array[]): Buffer => der(0x30, Buffer.concat(children));
const oid = (hex: string): Buffer => der(0x06, Buffer.from(hex, 'hex'));
const NULL = Buffer.from([0x05, 0x00]);

export const OIDS = {
  envelopedData: '2a864886f70d010703',
  data: '2a864886f70d010701',
  rsaesOaep: '2a864886f70d010107',
  mgf1: '2a864886f70d010108',
  sha256: '608648016503040201',
  sha1: '2b0e03021a',
  aes256Cbc: '60864801650304012a',
  aes128Cbc: '608648016503040102',
} as const;

export interface EnvelopeOptions {
  /** Content chunk size (KMS streams the content in chunks). Default 1024. */
  readonly chunk?: number;
  /** Override the subjectKeyIdentifier (default: SHA-256 of the recipient's SPKI DER). */
  readonly subjectKeyIdentifier?: Uint8Array;
}

/** The content key and IV used, for tests that build variants by hand. */
export interface BuiltEnvelope {
  readonly ber: Buffer;
  readonly contentKey: Buffer;
  readonly iv: Buffer;
}

/** KMS's CiphertextForRecipient of `plaintext` for `recipient` (an RSA public key). */
export function buildRecipientEnvelope(plaintext: Uint8Array, recipient: KeyObject, options: EnvelopeOptions = {}): BuiltEnvelope {
  const contentKey = randomBytes(32);
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-cbc', contentKey, iv);
  const content = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const encryptedKey = publicEncrypt({ key: recipient, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, contentKey);
  const ski = options.subjectKeyIdentifier ?? createHash('sha256').update(recipient.export({ format: 'der', type: 'spki' })).digest();
  const chunk = options.chunk ?? 1024;
  const chunks: Buffer[] = [];
  for (let i = 0; i < content.length; i += chunk) chunks.push(der(0x04, content.subarray(i, i + chunk)));

  const sha256 = seq(oid(OIDS.sha256), NULL);
  const oaep = seq(oid(OIDS.rsaesOaep), seq(der(0xa0, sha256), der(0xa1, seq(oid(OIDS.mgf1), sha256))));
  const ktri = seq(der(0x02, Buffer.of(2)), der(0x80, ski), oaep, der(0x04, encryptedKey));
  const eci = indefinite(0x30, oid(OIDS.data), seq(oid(OIDS.aes256Cbc), der(0x04, iv)), indefinite(0xa0, ...chunks));
  const enveloped = indefinite(0x30, der(0x02, Buffer.of(2)), der(0x31, ktri), eci);
  const ber = indefinite(0x30, oid(OIDS.envelopedData), indefinite(0xa0, enveloped));
  return { ber, contentKey, iv };
}
