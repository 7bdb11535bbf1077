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
  /** Certificates whose signature was verified, keyed by SHA-256(cert) + SHA-256(issuer). */
  readonly cache: Lru<string, ParsedCertificate>;
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
    const sha256 = sha256Hex(der);
    const key = sha256 + issuer.sha256;
    let cert = ctx.cache.get(key);
    if (!cert) {
      cert = yield* parseOwnCopy(der, sha256, label);
      yield* checkIssuedBy(cert, issuer, label);
      ctx.cache.set(key, cert);
    }
    checkCaConstraints(cert, label, cas - i);
    checkValidity(cert, label, ctx.at);
    issuer = cert;
  }

  // An enclave keeps its leaf for hours, so repeat documents from a known
  // enclave reuse the verified leaf exactly as CA certificates are reused.
  const leafSha256 = sha256Hex(leafDer);
  const leafKey = leafSha256 + issuer.sha256;
  let leaf = ctx.cache.get(leafKey);
  if (!leaf) {
    leaf = yield* parseOwnCopy(leafDer, leafSha256, 'leaf certificate');
    yield* checkIssuedBy(leaf, issuer, 'leaf certificate');
    ctx.cache.set(leafKey, leaf);
  }
  if (leaf.isCA) throw chainError('leaf certificate must not be a CA');
  if (leaf.keyUsage !== undefined && (leaf.keyUsage & KeyUsage.digitalSignature) === 0) {
    throw chainError('leaf certificate keyUsage does not allow digitalSignature');
  }
  checkValidity(leaf, 'leaf certificate', ctx.at);
  return { leaf, root };
}
