/**
 * The one CMS structure the agent accepts: KMS's `CiphertextForRecipient`
 * (Decrypt with `Recipient`), a BER ContentInfo / EnvelopedData v2 with
 * exactly one KeyTransRecipientInfo v2 (32-byte subjectKeyIdentifier,
 * RSAES-OAEP with SHA-256 and MGF1-SHA-256) and AES-256-CBC content, possibly
 * chunked and with indefinite lengths.
 *
 * A small strict reader rather than a library: the general ASN.1/CMS
 * libraries (pkijs, @peculiar/asn1-cms + asn1-schema + asn1js + tslib) would
 * more than double the agent's dependencies inside the measured image, for
 * one fixed structure. Everything that is not this structure is refused with
 * a stable code; the cryptography is node:crypto's.
 *
 * Integrity: AES-CBC is not authenticated. The CMS reaches the agent inside the
 * broker-signed claims, bound to this enclave's document (doc, nonce, aud), so
 * no relay can alter it; this reader adds no authenticity of its own.
 */
import { createDecipheriv, privateDecrypt, constants, type KeyObject } from 'node:crypto';
import { CodedError } from '../lib/coded-error.js';

/**
 * - `CMS_MALFORMED`: not well-formed BER, or not shaped like KMS's EnvelopedData.
 * - `CMS_UNSUPPORTED`: well-formed, but another version, recipient type or algorithm than KMS's Recipient mode uses.
 * - `CMS_WRONG_RECIPIENT`: the content key does not decrypt with this enclave's private key (encrypted to another key).
 * - `CMS_DECRYPT_FAILED`: the content key decrypts but the content does not (wrong key size, bad padding).
 */
export type CmsErrorCode = 'CMS_MALFORMED' | 'CMS_UNSUPPORTED' | 'CMS_WRONG_RECIPIENT' | 'CMS_DECRYPT_FAILED';

export class CmsError extends CodedError<CmsErrorCode> {
  override readonly name = 'CmsError';
}

/** Largest CMS accepted: a 64 KiB value plus its envelope, with room for chunking overhead. */
export const MAX_CMS_BYTES = 256 * 1024;
const MAX_DEPTH = 16;
const MAX_NODES = 4096;

/** The parts of the envelope the decryption needs. */
export interface RecipientEnvelope {
  readonly subjectKeyIdentifier: Uint8Array;
  readonly encryptedKey: Uint8Array;
  readonly iv: Uint8Array;
  readonly encryptedContent: Uint8Array;
}

// Identifier octets (class | constructed | number), low tag numbers only.
const INTEGER = 0x02;
const OCTET_STRING = 0x04;
const OCTET_STRING_C = 0x24;
const NULL = 0x05;
const OID = 0x06;
const SEQUENCE = 0x30;
const SET = 0x31;
const CTX0_P = 0x80;
const CTX0_C = 0xa0;
const CTX1_C = 0xa1;
const CTX2_C = 0xa2;

// DER contents of the object identifiers of this structure.
const OID_ENVELOPED_DATA = '2a864886f70d010703'; // 1.2.840.113549.1.7.3
const OID_DATA = '2a864886f70d010701'; // 1.2.840.113549.1.7.1
const OID_RSAES_OAEP = '2a864886f70d010107'; // 1.2.840.113549.1.1.7
const OID_MGF1 = '2a864886f70d010108'; // 1.2.840.113549.1.1.8
const OID_SHA256 = '608648016503040201'; // 2.16.840.1.101.3.4.2.1
const OID_AES256_CBC = '60864801650304012a'; // 2.16.840.1.101.3.4.1.42

/** One BER element: primitive contents, or the children of a constructed one. */
interface Node {
  readonly tag: number;
  readonly bytes?: Uint8Array;
  readonly children?: readonly Node[];
}

const malformed = (message: string): CmsError => new CmsError('CMS_MALFORMED', `recipient ciphertext: ${message}`);
const unsupported = (message: string): CmsError => new CmsError('CMS_UNSUPPORTED', `recipient ciphertext: ${message}`);

/** A strict BER reader: low tag numbers, lengths of at most 4 bytes, indefinite lengths only on constructed elements. */
class BerReader {
  #nodes = 0;
  constructor(private readonly buf: Uint8Array) {}

  /** Reads the element at `pos`; returns it and the position after it. */
  read(pos: number, end: number, depth: number): { node: Node; next: number } {
    if (depth > MAX_DEPTH) throw malformed('nested too deeply');
    if (++this.#nodes > MAX_NODES) throw malformed('too many elements');
    if (pos + 2 > end) throw malformed('truncated element header');
    const tag = this.buf[pos]!;
    if ((tag & 0x1f) === 0x1f) throw malformed('high tag numbers are not used in this structure');
    if (tag === 0x00) throw malformed('unexpected end-of-contents marker');
    const constructed = (tag & 0x20) !== 0;
    let p = pos + 1;
    const first = this.buf[p++]!;
    if (first === 0x80) {
      if (!constructed) throw malformed('indefinite length on a primitive element');
      const children: Node[] = [];
      for (;;) {
        if (p + 2 > end) throw malformed('indefinite-length element without end-of-contents');
        if (this.buf[p] === 0x00) {
          if (this.buf[p + 1] !== 0x00) throw malformed('malformed end-of-contents marker');
          return { node: { tag, children }, next: p + 2 };
        }
        const child = this.read(p, end, depth + 1);
        children.push(child.node);
        p = child.next;
      }
    }
    let length: number;
    if (first < 0x80) length = first;
    else {
      const count = first & 0x7f;
      if (count > 4) throw malformed('length field longer than 4 bytes');
      if (p + count > end) throw malformed('truncated length');
      length = 0;
      for (let i = 0; i < count; i++) length = length * 256 + this.buf[p++]!;
    }
    if (length > end - p) throw malformed('element longer than its container');
    const stop = p + length;
    if (!constructed) return { node: { tag, bytes: this.buf.subarray(p, stop) }, next: stop };
    const children: Node[] = [];
    while (p < stop) {
      const child = this.read(p, stop, depth + 1);
      children.push(child.node);
      p = child.next;
    }
    return { node: { tag, children }, next: stop };
  }
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function expectTag(node: Node | undefined, tag: number, what: string): Node {
  if (!node) throw malformed(`${what} is missing`);
  if (node.tag !== tag) throw malformed(`${what} has tag 0x${node.tag.toString(16)}, expected 0x${tag.toString(16)}`);
  return node;
}

function children(node: Node | undefined, tag: number, what: string, min: number, max: number): readonly Node[] {
  const list = expectTag(node, tag, what).children!;
  if (list.length < min || list.length > max) throw malformed(`${what} has ${list.length} elements, expected ${min === max ? min : `${min}..${max}`}`);
  return list;
}

function primitive(node: Node | undefined, tag: number, what: string): Uint8Array {
  return expectTag(node, tag, what).bytes!;
}

function expectOid(node: Node | undefined, oid: string, what: string): void {
  const got = hex(primitive(node, OID, what));
  if (got !== oid) throw unsupported(`${what} is ${got}, expected ${oid}`);
}

function expectVersion(node: Node | undefined, version: number, what: string): void {
  const bytes = primitive(node, INTEGER, what);
  if (bytes.length === 0) throw malformed(`${what} is an empty INTEGER`);
  if (bytes.length !== 1 || bytes[0] !== version) throw unsupported(`${what} is not ${version}`);
}

/** An AlgorithmIdentifier for SHA-256, parameters absent or NULL (both are seen in the wild). */
function expectSha256(node: Node | undefined, what: string): void {
  const [oid, params] = children(node, SEQUENCE, what, 1, 2);
  expectOid(oid, OID_SHA256, what);
  if (params && (params.tag !== NULL || params.bytes!.length !== 0)) throw malformed(`${what} parameters are not NULL`);
}

/** RSAES-OAEP with SHA-256 and MGF1-SHA-256, no label: the only key transport KMS Recipient uses. */
function expectOaepSha256(node: Node | undefined): void {
  const [oid, params] = children(node, SEQUENCE, 'keyEncryptionAlgorithm', 2, 2);
  expectOid(oid, OID_RSAES_OAEP, 'keyEncryptionAlgorithm');
  const fields = children(params, SEQUENCE, 'RSAES-OAEP parameters', 0, 3);
  // Absent fields mean the SHA-1 defaults: both must be present and say SHA-256.
  if (fields[0]?.tag !== CTX0_C || fields[1]?.tag !== CTX1_C) throw unsupported('RSAES-OAEP parameters use the SHA-1 defaults (hashFunc and maskGenFunc must say SHA-256)');
  expectSha256(children(fields[0], CTX0_C, 'OAEP hashFunc', 1, 1)[0], 'OAEP hashFunc');
  const [mgf, mgfHash] = children(children(fields[1], CTX1_C, 'OAEP maskGenFunc', 1, 1)[0], SEQUENCE, 'OAEP maskGenFunc', 2, 2);
  expectOid(mgf, OID_MGF1, 'OAEP maskGenFunc');
  expectSha256(mgfHash, 'MGF1 hash');
  if (fields[2]) {
    if (fields[2].tag === CTX2_C) throw unsupported('an OAEP label (pSourceFunc) is not used by KMS');
    throw malformed('RSAES-OAEP parameters have an unknown field');
  }
}

/** The contents of an OCTET STRING, primitive or constructed from (possibly nested) chunks, as one copy. */
function octets(node: Node, what: string): Uint8Array {
  const parts: Uint8Array[] = [];
  const collect = (n: Node): void => {
    if (n.bytes) parts.push(n.bytes);
    else for (const c of n.children!) {
      if (c.tag !== OCTET_STRING && c.tag !== OCTET_STRING_C) throw malformed(`${what} has a chunk that is not an OCTET STRING`);
      collect(c);
    }
  };
  collect(node);
  return new Uint8Array(Buffer.concat(parts));
}

/**
 * Parses KMS's CiphertextForRecipient, refusing anything else.
 *
 * @throws CmsError (CMS_MALFORMED, CMS_UNSUPPORTED)
 */
export function parseRecipientEnvelope(ber: Uint8Array): RecipientEnvelope {
  if (ber.length === 0) throw malformed('empty');
  if (ber.length > MAX_CMS_BYTES) throw malformed(`larger than ${MAX_CMS_BYTES} bytes`);
  const { node: root, next } = new BerReader(ber).read(0, ber.length, 0);
  if (next !== ber.length) throw malformed('trailing bytes after the ContentInfo');

  const [contentType, explicit] = children(root, SEQUENCE, 'ContentInfo', 2, 2);
  expectOid(contentType, OID_ENVELOPED_DATA, 'ContentInfo contentType');
  const [enveloped] = children(explicit, CTX0_C, 'ContentInfo content', 1, 1);
  const env = children(enveloped, SEQUENCE, 'EnvelopedData', 3, 5);
  expectVersion(env[0], 2, 'EnvelopedData version');
  if (env[1]?.tag === CTX0_C) throw unsupported('EnvelopedData has originatorInfo (KMS sends none)');
  if (env.length !== 3) throw unsupported('EnvelopedData has unprotectedAttrs or unknown fields (KMS sends none)');

  const recipients = expectTag(env[1], SET, 'recipientInfos').children!;
  if (recipients.length !== 1) throw unsupported(`recipientInfos has ${recipients.length} recipients, expected exactly one`);
  if (recipients[0]!.tag !== SEQUENCE) throw unsupported('the recipient is not a KeyTransRecipientInfo');
  const ktri = children(recipients[0], SEQUENCE, 'KeyTransRecipientInfo', 4, 4);
  expectVersion(ktri[0], 2, 'KeyTransRecipientInfo version');
  // v2 identifies the recipient by subjectKeyIdentifier ([0] IMPLICIT OCTET STRING).
  const ski = primitive(ktri[1], CTX0_P, 'KeyTransRecipientInfo subjectKeyIdentifier');
  if (ski.length !== 32) throw malformed(`subjectKeyIdentifier is ${ski.length} bytes, expected 32`);
  expectOaepSha256(ktri[2]);
  const encryptedKey = primitive(ktri[3], OCTET_STRING, 'encryptedKey');
  if (encryptedKey.length !== 256) throw unsupported(`encryptedKey is ${encryptedKey.length} bytes, expected 256 (RSA-2048)`);

  const eci = children(env[2], SEQUENCE, 'EncryptedContentInfo', 3, 3);
  expectOid(eci[0], OID_DATA, 'EncryptedContentInfo contentType');
  const [algorithm, ivNode] = children(eci[1], SEQUENCE, 'contentEncryptionAlgorithm', 2, 2);
  expectOid(algorithm, OID_AES256_CBC, 'contentEncryptionAlgorithm');
  const iv = primitive(ivNode, OCTET_STRING, 'AES-CBC IV');
  if (iv.length !== 16) throw malformed(`the AES-CBC IV is ${iv.length} bytes, expected 16`);
  const content = eci[2]!;
  if (content.tag !== CTX0_P && content.tag !== CTX0_C) throw malformed('encryptedContent has the wrong tag');
  const encryptedContent = octets(content, 'encryptedContent');
  if (encryptedContent.length === 0 || encryptedContent.length % 16 !== 0) throw malformed('encryptedContent is not a positive multiple of the AES block size');
  return { subjectKeyIdentifier: new Uint8Array(ski), encryptedKey: new Uint8Array(encryptedKey), iv: new Uint8Array(iv), encryptedContent };
}

/**
 * Decrypts KMS's CiphertextForRecipient with this enclave's private key:
 * RSAES-OAEP-SHA-256 for the content key, then AES-256-CBC with PKCS#7
 * padding. The recipient is established by the OAEP decryption itself: a
 * content key encrypted to any other key fails there (CMS_WRONG_RECIPIENT).
 * The subjectKeyIdentifier is checked for shape only: AWS does not document
 * how KMS derives it, and KMS's own client (the Nitro Enclaves SDK) does not
 * compare it either.
 *
 * @throws CmsError with a stable code
 */
export function decryptRecipientEnvelope(ber: Uint8Array, privateKey: KeyObject): Uint8Array {
  const envelope = parseRecipientEnvelope(ber);
  let contentKey: Buffer;
  try {
    contentKey = privateDecrypt({ key: privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, envelope.encryptedKey);
  } catch (cause) {
    throw new CmsError('CMS_WRONG_RECIPIENT', 'recipient ciphertext: the content key does not decrypt with this enclave\'s key (encrypted to another key)', { cause });
  }
  try {
    if (contentKey.length !== 32) throw new CmsError('CMS_DECRYPT_FAILED', `recipient ciphertext: the content key is ${contentKey.length} bytes, expected 32 (AES-256)`);
    const decipher = createDecipheriv('aes-256-cbc', contentKey, envelope.iv);
    const head = decipher.update(envelope.encryptedContent);
    try {
      return new Uint8Array(Buffer.concat([head, decipher.final()]));
    } catch (cause) {
      throw new CmsError('CMS_DECRYPT_FAILED', 'recipient ciphertext: the content does not decrypt (bad padding)', { cause });
    } finally {
      head.fill(0);
    }
  } finally {
    contentKey.fill(0);
  }
}
