import { createPublicKey, KeyObject, webcrypto } from 'node:crypto';
import { sha256Hex } from './bytes.js';
import { AttestationError } from './errors.js';
import { DerError, Tag, children, expectTlv, oidToString, readBoolean, readSmallUint, readTime, readTlv, type Tlv } from './der.js';

/** KeyUsage bits as RFC 5280 numbers them (bit 0 = digitalSignature). */
export const KeyUsage = {
  digitalSignature: 1 << 0,
  keyCertSign: 1 << 5,
} as const;

/** The fields of an X.509 v3 certificate that chain validation uses. */
export interface ParsedCertificate {
  readonly der: Uint8Array;
  /** Lower-case hex SHA-256 of `der`. */
  readonly sha256: string;
  /** The exact TBSCertificate bytes the issuer signed. */
  readonly tbs: Uint8Array;
  /** DER-encoded ECDSA signature (r, s) from the signatureValue BIT STRING. */
  readonly signature: Uint8Array;
  /** Raw DER of the issuer and subject Names, compared byte for byte. */
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly notBefore: number;
  readonly notAfter: number;
  readonly isCA: boolean;
  /** basicConstraints pathLenConstraint, when present. */
  readonly pathLen: number | undefined;
  /** KeyUsage bits, or undefined when the extension is absent. */
  readonly keyUsage: number | undefined;
  /** The subject's P-384 public key. */
  readonly publicKey: KeyObject;
}

// AlgorithmIdentifier { ecdsa-with-SHA384 } with absent parameters (RFC 5758).
const ECDSA_WITH_SHA384 = Buffer.from('300a06082a8648ce3d040303', 'hex');
const OID_BASIC_CONSTRAINTS = '2.5.29.19';
const OID_KEY_USAGE = '2.5.29.15';

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

interface Extensions {
  isCA: boolean;
  pathLen: number | undefined;
  keyUsage: number | undefined;
}

function parseBasicConstraints(value: Uint8Array): Pick<Extensions, 'isCA' | 'pathLen'> {
  const seq = expectTlv(value, 0, Tag.Sequence, 'basicConstraints');
  if (seq.end !== value.length) throw new DerError('basicConstraints: trailing bytes');
  const items = children(seq);
  let i = 0;
  let isCA = false;
  let pathLen: number | undefined;
  if (items[i]?.tag === Tag.Boolean) {
    isCA = readBoolean(items[i]!);
    // DER omits DEFAULT values, so an explicit FALSE is not DER.
    if (!isCA) throw new DerError('basicConstraints: explicit cA FALSE is not DER');
    i++;
  }
  if (items[i]?.tag === Tag.Integer) pathLen = readSmallUint(items[i++]!);
  if (i !== items.length) throw new DerError('basicConstraints: unexpected content');
  if (pathLen !== undefined && !isCA) throw new DerError('basicConstraints: pathLen without cA');
  return { isCA, pathLen };
}

function parseKeyUsage(value: Uint8Array): number {
  const bits = expectTlv(value, 0, Tag.BitString, 'keyUsage');
  if (bits.end !== value.length) throw new DerError('keyUsage: trailing bytes');
  const c = bits.content;
  if (c.length < 2 || c[0]! > 7 || c.length > 3) throw new DerError('keyUsage: invalid BIT STRING');
  const count = (c.length - 1) * 8 - c[0]!;
  let flags = 0;
  for (let i = 0; i < count; i++) if (c[1 + (i >> 3)]! & (0x80 >> (i & 7))) flags |= 1 << i;
  return flags;
}

function parseExtensions(wrapper: Tlv | undefined): Extensions {
  const out: Extensions = { isCA: false, pathLen: undefined, keyUsage: undefined };
  if (!wrapper) return out;
  const list = expectTlv(wrapper.content, 0, Tag.Sequence, 'extensions');
  if (list.end !== wrapper.content.length) throw new DerError('extensions: trailing bytes');
  const seen = new Set<string>();
  for (const ext of children(list)) {
    if (ext.tag !== Tag.Sequence) throw new DerError('extension must be a SEQUENCE');
    const parts = children(ext);
    const oidTlv = parts[0];
    if (!oidTlv || oidTlv.tag !== Tag.Oid) throw new DerError('extension without OID');
    const oid = oidToString(oidTlv.content);
    if (seen.has(oid)) throw new DerError(`duplicate extension ${oid}`);
    seen.add(oid);
    let critical = false;
    let valueTlv = parts[1];
    if (valueTlv?.tag === Tag.Boolean) {
      critical = readBoolean(valueTlv);
      valueTlv = parts[2];
      if (parts.length !== 3) throw new DerError(`extension ${oid}: unexpected content`);
    } else if (parts.length !== 2) {
      throw new DerError(`extension ${oid}: unexpected content`);
    }
    if (!valueTlv || valueTlv.tag !== Tag.OctetString) throw new DerError(`extension ${oid}: value must be an OCTET STRING`);
    if (oid === OID_BASIC_CONSTRAINTS) Object.assign(out, parseBasicConstraints(valueTlv.content));
    else if (oid === OID_KEY_USAGE) out.keyUsage = parseKeyUsage(valueTlv.content);
    else if (critical) throw new DerError(`unsupported critical extension ${oid}`);
  }
  return out;
}

// SubjectPublicKeyInfo header for id-ecPublicKey on secp384r1 followed by a
// 97-byte uncompressed point. Checking the bytes is exact and avoids asking
// OpenSSL for key details, which costs as much as the rest of the parse.
const P384_SPKI_PREFIX = Buffer.from('3076301006072a8648ce3d020106052b81040022036200', 'hex');
const P384_SPKI_LENGTH = P384_SPKI_PREFIX.length + 97;

/**
 * Checks that `spki` is exactly an uncompressed EC P-384 SubjectPublicKeyInfo (the identity, compressed
 * and hybrid forms, other curves and other lengths are refused here, before any import).
 */
function checkP384Spki(spki: Uint8Array): void {
  if (spki.length !== P384_SPKI_LENGTH || !sameBytes(spki.subarray(0, P384_SPKI_PREFIX.length), P384_SPKI_PREFIX) || spki[P384_SPKI_PREFIX.length] !== 0x04) {
    throw new DerError('public key is not an uncompressed EC P-384 key');
  }
}

/**
 * Imports a P-384 SubjectPublicKeyInfo that {@link parseUnkeyedCertificate} accepted, through OpenSSL's SPKI
 * decoder, which refuses a point that is not on the curve (or a coordinate not below p).
 *
 * @throws Error OpenSSL's, for a point it refuses
 */
export function importP384Spki(spki: Uint8Array): KeyObject {
  return createPublicKey({ key: Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength), format: 'der', type: 'spki' });
}

/** What an import threw, as an Error ({@link keyedCertificate} turns it into CERT_CHAIN_INVALID). */
export const asImportError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));

/** {@link importP384Spki}'s key, or its error as a value: what {@link keyedCertificate} takes. */
export function importP384SpkiOutcome(spki: Uint8Array): KeyObject | Error {
  try {
    return importP384Spki(spki);
  } catch (err) {
    return asImportError(err);
  }
}

const RAW_P384 = { name: 'ECDSA', namedCurve: 'P-384' } as const;

/**
 * The same key as {@link importP384Spki}, imported from its point alone (WebCrypto 'raw'): node's
 * KeyObjectHandle.initECRaw decodes it with the same EC_POINT_oct2point the SPKI decoder reaches, so the same
 * points are refused (not on the curve; a coordinate not below p). The SPKI around the point was checked byte for
 * byte by the parse, so the curve, form and length are those of the SPKI path. About a third of the SPKI decoder's
 * CPU (issue 15, goal 2: a new enclave's leaf key is imported once per document); async only in name (the import
 * runs on the calling thread, its answer comes as a promise), so only the asynchronous verifier uses it.
 *
 * @throws Error (a DOMException DataError) for a point it refuses
 */
export async function importP384Point(spki: Uint8Array): Promise<KeyObject> {
  const key = await webcrypto.subtle.importKey('raw', spki.subarray(P384_SPKI_PREFIX.length), RAW_P384, true, ['verify']);
  return KeyObject.from(key);
}

function checkedSpki(spki: Uint8Array): Uint8Array {
  checkP384Spki(spki);
  return spki;
}

function parseOrThrow(der: Uint8Array, sha256: string | undefined): UnkeyedCertificate {
  const cert = expectTlv(der, 0, Tag.Sequence, 'Certificate');
  if (cert.end !== der.length) throw new DerError('trailing bytes after Certificate');
  const [tbs, outerAlg, sigBits, ...rest] = children(cert);
  if (!tbs || !outerAlg || !sigBits || rest.length) throw new DerError('Certificate must have 3 elements');
  if (tbs.tag !== Tag.Sequence) throw new DerError('TBSCertificate must be a SEQUENCE');
  if (!sameBytes(outerAlg.raw, ECDSA_WITH_SHA384)) throw new DerError('signature algorithm is not ecdsa-with-SHA384');
  if (sigBits.tag !== Tag.BitString || sigBits.content.length < 2 || sigBits.content[0] !== 0) {
    throw new DerError('signatureValue must be a whole-byte BIT STRING');
  }

  const fields = children(tbs);
  let i = 0;
  const version = fields[i];
  if (version?.tag !== 0xa0) throw new DerError('only X.509 v3 certificates are accepted');
  const versionInt = readTlv(version.content, 0);
  if (versionInt.end !== version.content.length || readSmallUint(versionInt) !== 2) {
    throw new DerError('only X.509 v3 certificates are accepted');
  }
  i++;
  // 20 octets of serial plus the sign byte DER adds when the top bit is set.
  const serial = fields[i++];
  if (serial?.tag !== Tag.Integer || serial.content.length === 0 || serial.content.length > 21) {
    throw new DerError('invalid serial number');
  }
  const innerAlg = fields[i++];
  if (!innerAlg || !sameBytes(innerAlg.raw, ECDSA_WITH_SHA384)) throw new DerError('TBS signature algorithm is not ecdsa-with-SHA384');
  const issuer = fields[i++];
  const validity = fields[i++];
  const subject = fields[i++];
  const spki = fields[i++];
  if (issuer?.tag !== Tag.Sequence || subject?.tag !== Tag.Sequence || spki?.tag !== Tag.Sequence) {
    throw new DerError('issuer, subject and subjectPublicKeyInfo must be SEQUENCEs');
  }
  if (validity?.tag !== Tag.Sequence) throw new DerError('validity must be a SEQUENCE');
  const times = children(validity);
  if (times.length !== 2) throw new DerError('validity must hold two times');
  // Unique identifiers ([1], [2]) are obsolete and ignored; extensions are [3].
  while (fields[i] && (fields[i]!.tag === 0x81 || fields[i]!.tag === 0xa1 || fields[i]!.tag === 0x82 || fields[i]!.tag === 0xa2)) i++;
  const extWrapper = fields[i];
  if (extWrapper && extWrapper.tag !== 0xa3) throw new DerError('unexpected field in TBSCertificate');
  if (fields.length > i + (extWrapper ? 1 : 0)) throw new DerError('unexpected trailing fields in TBSCertificate');
  const ext = parseExtensions(extWrapper);

  return {
    der,
    sha256: sha256 ?? sha256Hex(der),
    tbs: tbs.raw,
    signature: sigBits.content.subarray(1),
    issuer: issuer.raw,
    subject: subject.raw,
    notBefore: readTime(times[0]!),
    notAfter: readTime(times[1]!),
    isCA: ext.isCA,
    pathLen: ext.pathLen,
    keyUsage: ext.keyUsage,
    spki: checkedSpki(spki.raw),
  };
}

/** A certificate parsed and checked as {@link parseCertificate} does, all but the import of its public key. */
export interface UnkeyedCertificate extends Omit<ParsedCertificate, 'publicKey'> {
  /** The subject's SubjectPublicKeyInfo: exactly an uncompressed P-384 point under the id-ecPublicKey/secp384r1 header. */
  readonly spki: Uint8Array;
}

function chainInvalid(label: string, cause: unknown): AttestationError {
  const detail = cause instanceof DerError ? cause.message : 'unreadable certificate';
  return new AttestationError('CERT_CHAIN_INVALID', `${label}: ${detail}`, { cause });
}

/**
 * {@link parseCertificate} up to its last step, the import of the public key: for a caller that imports it
 * another way ({@link importP384Point}) and completes it with {@link keyedCertificate}.
 *
 * @throws AttestationError CERT_CHAIN_INVALID
 */
export function parseUnkeyedCertificate(der: Uint8Array, label: string, sha256?: string): UnkeyedCertificate {
  try {
    return parseOrThrow(der, sha256);
  } catch (cause) {
    throw chainInvalid(label, cause);
  }
}

/**
 * Completes {@link parseUnkeyedCertificate}'s result with its imported key, or refuses it as parseCertificate does
 * a key OpenSSL refuses.
 *
 * @throws AttestationError CERT_CHAIN_INVALID when `key` is the import's error
 */
export function keyedCertificate(cert: UnkeyedCertificate, key: KeyObject | Error, label: string): ParsedCertificate {
  if (key instanceof Error) throw chainInvalid(label, new DerError(`unreadable public key: ${key.message}`));
  // Listed field by field: one object shape for every certificate, as the parse built it before.
  return {
    der: cert.der,
    sha256: cert.sha256,
    tbs: cert.tbs,
    signature: cert.signature,
    issuer: cert.issuer,
    subject: cert.subject,
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    isCA: cert.isCA,
    pathLen: cert.pathLen,
    keyUsage: cert.keyUsage,
    publicKey: key,
  };
}

/**
 * Parses a DER certificate of the kind the Nitro PKI issues (X.509 v3,
 * ecdsa-with-SHA384, P-384 key). Structure only: no signature is checked.
 *
 * @param der - the certificate bytes
 * @param label - names the certificate in error messages ("cabundle[2]", "leaf")
 * @param sha256 - the lower-case hex SHA-256 of `der` when the caller already computed it
 * @throws AttestationError CERT_CHAIN_INVALID
 */
export function parseCertificate(der: Uint8Array, label: string, sha256?: string): ParsedCertificate {
  const cert = parseUnkeyedCertificate(der, label, sha256);
  return keyedCertificate(cert, importP384SpkiOutcome(cert.spki), label);
}
