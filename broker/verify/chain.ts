import type { KeyObject } from 'node:crypto';
import { AttestationError } from './errors.js';
import { KeyUsage, keyedCertificate, parseUnkeyedCertificate, type ParsedCertificate } from './certificate.js';
import { bytesEqual, sha256Hex } from './bytes.js';
import type { Lru } from './lru.js';
import { runNow, type Steps } from './signature-check.js';

/** Longest cabundle accepted (AWS issues root + 3 intermediates). */
const MAX_BUNDLE = 8;

/** The outcome of a successful chain validation. */
export interface ValidatedChain {
  readonly leaf: ParsedCertificate;
  readonly root: ParsedCertificate;
}

/** What chain validation needs beyond the certificates themselves. */
export interface ChainContext {
  /** Pinned roots; cabundle[0] must equal one of them byte for byte. */
  readonly roots: readonly ParsedCertificate[];
  /** Validation time, epoch milliseconds. */
  readonly at: number;
  /** Certificates whose signature was verified, keyed by {@link cacheKey}; a hit needs the same DER and issuer. */
  readonly cache: Lru<string, VerifiedCertificate>;
}

/** A certificate whose signature verified under the issuer whose DER has SHA-256 `issuerSha256`. */
export interface VerifiedCertificate {
  readonly cert: ParsedCertificate;
  readonly issuerSha256: string;
}

const KEY_BYTES = 32;

/**
 * The cache slot of a certificate: its last 32 bytes (inside its signature value, so they differ from certificate to
 * certificate), read as latin1. Only a slot: a hit must have the same DER byte for byte and the same issuer
 * ({@link cachedUnder}), so two certificates sharing a slot only ever cost a re-verification. Cheaper than the
 * SHA-256 of every certificate of every document plus a 128-character key built and hashed per lookup (issue 15).
 */
export function cacheKey(der: Uint8Array): string {
  const n = Math.min(KEY_BYTES, der.length);
  return Buffer.from(der.buffer, der.byteOffset + der.length - n, n).toString('latin1');
}

/** The cached certificate for exactly these DER bytes, verified under exactly this issuer, if any. */
function cachedUnder(cache: Lru<string, VerifiedCertificate>, key: string, der: Uint8Array, issuer: ParsedCertificate): ParsedCertificate | undefined {
  const hit = cache.get(key);
  return hit !== undefined && hit.issuerSha256 === issuer.sha256 && bytesEqual(hit.cert.der, der) ? hit.cert : undefined;
}

function chainError(message: string): AttestationError {
  return new AttestationError('CERT_CHAIN_INVALID', message);
}

function checkValidity(cert: ParsedCertificate, label: string, at: number): void {
  if (at < cert.notBefore) {
    throw new AttestationError('CERT_EXPIRED', `${label} is not valid before ${new Date(cert.notBefore).toISOString()}`);
  }
  if (at > cert.notAfter) {
    throw new AttestationError('CERT_EXPIRED', `${label} expired at ${new Date(cert.notAfter).toISOString()}`);
  }
}

function* checkIssuedBy(cert: ParsedCertificate, issuer: ParsedCertificate, label: string): Steps<void> {
  if (!bytesEqual(cert.issuer, issuer.subject)) throw chainError(`${label}: issuer name does not match its issuer's subject`);
  const ok = (yield { data: cert.tbs, key: issuer.publicKey, signature: cert.signature }) as boolean;
  if (!ok) throw chainError(`${label}: signature does not verify under its issuer's key`);
}

function checkCaConstraints(cert: ParsedCertificate, label: string, casBelow: number): void {
  if (!cert.isCA) throw chainError(`${label}: is not a CA (basicConstraints cA is not set)`);
  if (cert.keyUsage === undefined || (cert.keyUsage & KeyUsage.keyCertSign) === 0) {
    throw chainError(`${label}: keyUsage does not allow keyCertSign`);
  }
  if (cert.pathLen !== undefined && casBelow > cert.pathLen) {
    throw chainError(`${label}: pathLen ${cert.pathLen} allows fewer CAs than the ${casBelow} below it`);
  }
}

/**
 * Parses a private copy, so a cached certificate holds only its own bytes, never the buffer it came in; its key is
 * imported as a step of its own (signature-check.ts), at the point parseCertificate imports it.
 */
function* parseOwnCopy(der: Uint8Array, sha256: string, label: string): Steps<ParsedCertificate> {
  const cert = parseUnkeyedCertificate(new Uint8Array(der), label, sha256);
  const key = (yield { importSpki: cert.spki }) as KeyObject | Error;
  return keyedCertificate(cert, key, label);
}

/**
 * Validates leaf <- cabundle[n-1] <- ... <- cabundle[1] <- pinned root.
 * cabundle[0] must equal a pinned root exactly: it is never trusted because
 * the document says so. Signatures already verified under the same issuer
 * DER are taken from the cache; every time-dependent and structural
 * constraint is checked on every call.
 *
 * @throws AttestationError UNTRUSTED_ROOT, CERT_CHAIN_INVALID or CERT_EXPIRED
 */
export function validateChain(leafDer: Uint8Array, cabundle: readonly Uint8Array[], ctx: ChainContext): ValidatedChain {
  return runNow(chainSteps(leafDer, cabundle, ctx));
}

/**
 * {@link validateChain} as steps that yield each certificate signature to check (broker/verify/signature-check.ts):
 * run on this thread or with the checks on libuv's thread pool, the same checks in the same order.
 */
export function* chainSteps(leafDer: Uint8Array, cabundle: readonly Uint8Array[], ctx: ChainContext): Steps<ValidatedChain> {
  if (cabundle.length === 0) throw new AttestationError('UNTRUSTED_ROOT', 'document carries no CA bundle: nothing links it to a pinned root');
  if (cabundle.length > MAX_BUNDLE) throw chainError(`cabundle has ${cabundle.length} certificates; at most ${MAX_BUNDLE} are accepted`);
  const root = ctx.roots.find((r) => bytesEqual(r.der, cabundle[0]!));
  if (!root) throw new AttestationError('UNTRUSTED_ROOT', 'cabundle[0] is not a pinned root certificate');

  const cas = cabundle.length - 1;
  checkCaConstraints(root, 'root', cas);
  checkValidity(root, 'root', ctx.at);

  let issuer = root;
  for (let i = 1; i < cabundle.length; i++) {
    const label = `cabundle[${i}]`;
    const der = cabundle[i]!;
    const key = cacheKey(der);
    let cert = cachedUnder(ctx.cache, key, der, issuer);
    if (!cert) {
      cert = yield* parseOwnCopy(der, sha256Hex(der), label);
      yield* checkIssuedBy(cert, issuer, label);
      ctx.cache.set(key, { cert, issuerSha256: issuer.sha256 });
    }
    checkCaConstraints(cert, label, cas - i);
    checkValidity(cert, label, ctx.at);
    issuer = cert;
  }

  // An enclave keeps its leaf for hours, so repeat documents from a known
  // enclave reuse the verified leaf exactly as CA certificates are reused.
  const leafKey = cacheKey(leafDer);
  let leaf = cachedUnder(ctx.cache, leafKey, leafDer, issuer);
  if (!leaf) {
    leaf = yield* parseOwnCopy(leafDer, sha256Hex(leafDer), 'leaf certificate');
    yield* checkIssuedBy(leaf, issuer, 'leaf certificate');
    ctx.cache.set(leafKey, { cert: leaf, issuerSha256: issuer.sha256 });
  }
  if (leaf.isCA) throw chainError('leaf certificate must not be a CA');
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KeyUsage.digitalSignature) === 0) {
    throw chainError('leaf certificate keyUsage does not allow digitalSignature');
  }
  checkValidity(leaf, 'leaf certificate', ctx.at);
  return { leaf, root };
}
