import { AttestationError } from './errors.js';
import { rawSignatureToDer, sigStructure, splitCoseSign1 } from './cose.js';
import { parseOwnedPayload, type AttestationPayload } from './payload.js';
import { parseCertificate, type ParsedCertificate } from './certificate.js';
import { chainSteps, type VerifiedCertificate } from './chain.js';
import { bytesEqual, fromHex, isAllZero, sha256Hex, toHex } from './bytes.js';
import { pemCertificates } from './pem.js';
import { AWS_NITRO_ROOT_G1_DER } from './aws-root.js';
import { Lru } from './lru.js';
import { PoolSlots, runNow, runOnPool, type Steps } from './signature-check.js';

/** A trusted root: PEM text (one or more certificates) or one DER certificate. */
export type TrustedRoot = string | Uint8Array;

/** Options for {@link verifyAttestation}. */
export interface VerifyOptions {
  /** Verification time: a Date or epoch milliseconds. Never read from the clock here. */
  readonly at: Date | number;
  /** Pinned roots. Default: the bundled AWS Nitro root G1 only. */
  readonly roots?: readonly TrustedRoot[];
  /** When set, the document's timestamp must lie in [at - maxAgeMs, at + clockSkewMs]. */
  readonly maxAgeMs?: number;
  /** Future skew tolerated by the freshness check. Default 60 000 ms. */
  readonly clockSkewMs?: number;
  /** When set, the document's nonce must equal these bytes exactly. */
  readonly expectedNonce?: Uint8Array;
  /** Required PCR values by index, as bytes or hex. A required PCR absent from the document is a mismatch. */
  readonly pcrs?: Readonly<Record<number, Uint8Array | string>>;
  /** Accept debug enclaves (PCR0, PCR1 and PCR2 all zero). Default false. */
  readonly allowDebug?: boolean;
}

/** Facts about the leaf (signing) certificate of a verified document. */
export interface SigningCertificateInfo {
  readonly der: Uint8Array;
  /** Lower-case hex SHA-256 of the DER. */
  readonly sha256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** A document that passed every check requested. */
export interface VerifiedDocument extends AttestationPayload {
  /** PCR0, PCR1 and PCR2 are all zero: the enclave runs in debug mode. */
  readonly debug: boolean;
  readonly signingCertificate: SigningCertificateInfo;
  /** Lower-case hex SHA-256 of the pinned root the chain ended at. */
  readonly rootSha256: string;
  /** Lower-case hex SHA-256 of the whole COSE document as received. */
  readonly documentSha256: string;
}

/** Settings for {@link createVerifier}. */
export interface VerifierSettings {
  /** Signature-verified certificates kept (LRU, CA and leaf). Default 1024. */
  readonly cacheSize?: number;
}

/** A verification function with its own certificate cache. */
export type Verifier = (document: Uint8Array, options: VerifyOptions) => VerifiedDocument;

/** Settings for {@link createThreadPoolVerifier}. */
export interface ThreadPoolVerifierSettings extends VerifierSettings {
  /** Signature checks on libuv's thread pool at once, at most (>= 1; more run on the calling thread); keep it below the pool's size (UV_THREADPOOL_SIZE). */
  readonly threads: number;
}

/**
 * {@link Verifier} with its signature checks on libuv's thread pool: the same verdict and error code for
 * every input, as a promise (rejected where the other throws).
 */
export type AsyncVerifier = (document: Uint8Array, options: VerifyOptions) => Promise<VerifiedDocument>;

const DEFAULT_SKEW_MS = 60_000;

function toMillis(at: Date | number): number {
  const ms = at instanceof Date ? at.getTime() : at;
  if (typeof ms !== 'number' || !Number.isFinite(ms)) throw new TypeError('options.at must be a valid Date or epoch milliseconds');
  return ms;
}

function requiredPcrs(pcrs: VerifyOptions['pcrs']): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  for (const [key, value] of Object.entries(pcrs ?? {})) {
    const index = Number(key);
    if (!Number.isInteger(index) || index < 0 || index > 31) throw new TypeError(`options.pcrs: ${key} is not a PCR index 0..31`);
    const bytes = typeof value === 'string' ? fromHex(value) : value;
    if (!(bytes instanceof Uint8Array)) throw new TypeError(`options.pcrs[${key}] must be bytes or an even-length hex string`);
    // A private copy: on the thread pool the comparison comes after an awaited check, and the caller's bytes may change.
    out.set(index, typeof value === 'string' ? bytes : new Uint8Array(bytes));
  }
  return out;
}

function checkFreshness(timestamp: number, at: number, options: Pick<VerifyOptions, 'maxAgeMs' | 'clockSkewMs'>): void {
  if (options.maxAgeMs === undefined) return;
  const skew = options.clockSkewMs ?? DEFAULT_SKEW_MS;
  if (timestamp < at - options.maxAgeMs) {
    throw new AttestationError('DOC_EXPIRED', `document is ${at - timestamp} ms old; at most ${options.maxAgeMs} ms accepted`);
  }
  if (timestamp > at + skew) {
    throw new AttestationError('DOC_EXPIRED', `document is dated ${timestamp - at} ms in the future; at most ${skew} ms skew accepted`);
  }
}

function checkNonce(nonce: Uint8Array | null, expected: Uint8Array | undefined): void {
  if (expected === undefined) return;
  if (nonce === null || !bytesEqual(nonce, expected)) {
    throw new AttestationError('NONCE_MISMATCH', nonce === null ? 'document carries no nonce' : 'document nonce does not match the expected nonce');
  }
}

function checkPcrs(actual: ReadonlyMap<number, Uint8Array>, required: Map<number, Uint8Array>): void {
  for (const [index, want] of required) {
    const got = actual.get(index);
    if (!got) throw new AttestationError('PCR_MISMATCH', `PCR${index} is required but absent from the document`);
    if (!bytesEqual(got, want)) {
      throw new AttestationError('PCR_MISMATCH', `PCR${index} is ${toHex(got)}, expected ${toHex(want)}`);
    }
  }
}

/** PCR0/1/2 all zero is how Nitro marks an enclave started with --debug-mode. */
function isDebug(pcrs: ReadonlyMap<number, Uint8Array>): boolean {
  return [0, 1, 2].every((i) => {
    const value = pcrs.get(i);
    return value !== undefined && isAllZero(value);
  });
}

/** The steps of one verification, given a verifier's caches: yields each signature to check (signature-check.ts). */
type VerifySteps = (document: Uint8Array, options: VerifyOptions) => Steps<VerifiedDocument>;

/**
 * The verification steps with their own bounded cache of signature-verified certificates and parsed roots,
 * shared by every verification run from them.
 */
function verificationSteps(settings: VerifierSettings): VerifySteps {
  const size = settings.cacheSize ?? 1024;
  const caCache = new Lru<string, VerifiedCertificate>(size);
  // PEM roots are keyed by the text itself: a caller passing the same string every time costs one
  // lookup (V8 keeps a string's hash), where a derived key string is rebuilt and rehashed per document.
  // DER roots are mutable bytes, so they are keyed by their digest.
  const pemRootCache = new Lru<string, ParsedCertificate[]>(64);
  const derRootCache = new Lru<string, ParsedCertificate[]>(64);

  const loadRoots = (roots: readonly TrustedRoot[]): ParsedCertificate[] => {
    const parsed: ParsedCertificate[] = [];
    for (const root of roots) {
      const rootCache = typeof root === 'string' ? pemRootCache : derRootCache;
      const key = typeof root === 'string' ? root : sha256Hex(root);
      let certs = rootCache.get(key);
      if (!certs) {
        const ders = typeof root === 'string' ? pemCertificates(root) : [root];
        certs = ders.map((der, i) => {
          try {
            return parseCertificate(new Uint8Array(der), `configured root #${i + 1}`);
          } catch (err) {
            throw new TypeError((err as Error).message, { cause: err });
          }
        });
        rootCache.set(key, certs);
      }
      parsed.push(...certs);
    }
    if (parsed.length === 0) throw new TypeError('options.roots must name at least one root certificate');
    return parsed;
  };

  return function* steps(document, options) {
    if (!(document instanceof Uint8Array)) throw new TypeError('document must be a Uint8Array');
    const at = toMillis(options.at);
    const pcrs = requiredPcrs(options.pcrs);
    const roots = loadRoots(options.roots ?? [AWS_NITRO_ROOT_G1_DER]);
    // Every option is read before the first signature check: on the thread pool, the caller runs on meanwhile.
    // Bytes are copied (the caller may change them in place), the rest read once.
    const { maxAgeMs, clockSkewMs, allowDebug } = options;
    const expectedNonce = options.expectedNonce instanceof Uint8Array ? new Uint8Array(options.expectedNonce) : options.expectedNonce;

    // 1-2: shape, then schema. The Sig_structure (step 4's input) is a private copy whose tail is the
    // payload: decoding from it copies the payload once, and nothing returned aliases `document`.
    const cose = splitCoseSign1(document);
    const signed = sigStructure(cose.protectedHeader, cose.payload);
    const payload = parseOwnedPayload(signed.subarray(signed.length - cose.payload.length));
    // Everything still read from `document` is taken before the first signature check: on the thread pool that
    // check is awaited, and the caller's buffer may change meanwhile (the digest is of the bytes as received).
    const signature = rawSignatureToDer(cose.signature); // 96 bytes (splitCoseSign1 checked): cannot throw
    const documentSha256 = sha256Hex(document);
    // 3: chain to a pinned root.
    const chain = yield* chainSteps(payload.certificate, payload.cabundle, { roots, at, cache: caCache });
    // 4: the COSE signature over the original bytes.
    const signatureOk = (yield { data: signed, key: chain.leaf.publicKey, signature }) as boolean;
    if (!signatureOk) throw new AttestationError('BAD_SIGNATURE', 'COSE signature does not verify under the leaf certificate key');
    // 5-6: what the caller asked for.
    checkFreshness(payload.timestamp, at, { maxAgeMs, clockSkewMs });
    checkNonce(payload.nonce, expectedNonce);
    checkPcrs(payload.pcrs, pcrs);
    const debug = isDebug(payload.pcrs);
    if (debug && !allowDebug) {
      throw new AttestationError('DEBUG_MODE', 'debug-mode enclave (PCR0/1/2 are zero): its memory is visible to the host');
    }

    return {
      ...payload,
      debug,
      signingCertificate: {
        // This document's own copy (the same bytes: the cache key is their digest), never the cached
        // certificate's buffer, which a caller could otherwise change for every later document.
        der: payload.certificate,
        sha256: chain.leaf.sha256,
        notBefore: new Date(chain.leaf.notBefore),
        notAfter: new Date(chain.leaf.notAfter),
      },
      rootSha256: chain.root.sha256,
      documentSha256,
    };
  };
}

/**
 * Creates a verifier with its own bounded cache of signature-verified
 * certificates and parsed roots. Use one per trust configuration in long-lived services;
 * {@link verifyAttestation} uses a shared default.
 */
export function createVerifier(settings: VerifierSettings = {}): Verifier {
  const steps = verificationSteps(settings);
  return (document, options) => runNow(steps(document, options));
}

/**
 * A verifier like {@link createVerifier}'s whose signature checks (the COSE signature; a certificate's under
 * its issuer on a cache miss) run on libuv's thread pool, at most `threads` at once (a check finding them all
 * busy runs on the calling thread): the same steps in the same order, so the same verdict and error code for
 * every input. Everything else (parsing, the chain's rules, freshness, nonce, PCRs) runs on the calling thread,
 * as there. Lets one process use more than one core for the ~60 % of a release that is the P-384 verify.
 */
export function createThreadPoolVerifier(settings: ThreadPoolVerifierSettings): AsyncVerifier {
  const slots = new PoolSlots(settings.threads);
  const steps = verificationSteps(settings);
  return (document, options) => runOnPool(steps(document, options), slots);
}

const defaultVerifier = createVerifier();

/**
 * Verifies an AWS Nitro Enclaves attestation document (COSE_Sign1) and
 * returns its contents. Checks, in order: COSE shape and ES384; payload
 * schema; certificate chain from the leaf through the cabundle to a pinned
 * root (signatures, CA flags, pathLen, keyUsage, validity at `at`); the COSE
 * signature; then freshness, nonce, PCRs and debug mode as requested.
 *
 * Pure: no I/O and no clock; the time is `options.at`.
 *
 * @param document - the raw CBOR bytes of the COSE_Sign1
 * @param options - trust roots, time and requirements
 * @returns the verified document
 * @throws AttestationError with a stable `code` for any invalid document;
 *   TypeError for invalid options
 */
export function verifyAttestation(document: Uint8Array, options: VerifyOptions): VerifiedDocument {
  return defaultVerifier(document, options);
}
