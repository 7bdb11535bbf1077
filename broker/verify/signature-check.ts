import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { asImportError, importP384Point, importP384SpkiOutcome } from './certificate.js';

/**
 * One ECDSA-with-SHA-384 signature a verification needs checked. Verification is written once, as a
 * generator of {@link Steps} that yields each check and is answered whether it verified; the two drivers
 * below answer on the calling thread ({@link runNow}) or on libuv's thread pool ({@link runOnPool}). Both
 * run exactly the same steps in the same order, so they reach the same verdict and error code.
 */
export interface SignatureCheck {
  /** The signed bytes (hashed with SHA-384). */
  readonly data: Uint8Array;
  readonly key: KeyObject;
  /** DER ECDSA-Sig-Value. */
  readonly signature: Uint8Array;
}

/**
 * The import of a certificate's P-384 public key, yielded where the certificate's parse imported it (so a key OpenSSL
 * refuses is refused at the same point, with the same code). Answered with the key or the import's error: on the
 * calling thread through the SPKI decoder, in the asynchronous driver from the point (WebCrypto 'raw', a third of
 * the CPU; the same points refused: certificate.ts).
 */
export interface KeyImport {
  /** An uncompressed P-384 SubjectPublicKeyInfo, its shape checked byte for byte (parseUnkeyedCertificate). */
  readonly importSpki: Uint8Array;
}

/** A step's answer: whether a signature verified, or a key import's outcome. */
export type StepAnswer = boolean | KeyObject | Error;

/** Verification steps: yield each signature check (receive whether it verified) and key import (receive the key or the error), return the result. */
export type Steps<T> = Generator<SignatureCheck | KeyImport, T, StepAnswer>;

function isKeyImport(step: SignatureCheck | KeyImport): step is KeyImport {
  return (step as Partial<KeyImport>).importSpki !== undefined;
}

/** A key import from the point (certificate.ts importP384Point), for the asynchronous driver; the synchronous one imports through the SPKI decoder (importP384SpkiOutcome). */
function importLater(step: KeyImport): Promise<KeyObject | Error> {
  return importP384Point(step.importSpki).catch(asImportError);
}

/** Checks on this thread. Anything OpenSSL refuses is a signature that does not verify. */
function checkNow(check: SignatureCheck): boolean {
  try {
    return cryptoVerify('sha384', check.data, { key: check.key, dsaEncoding: 'der' }, check.signature);
  } catch {
    return false;
  }
}

/** The same check as a libuv thread-pool job (node copies `data` and `signature` into the job first). */
function checkOnPool(check: SignatureCheck): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      cryptoVerify('sha384', check.data, { key: check.key, dsaEncoding: 'der' }, check.signature, (err, ok) => resolve(err === null && ok === true));
    } catch {
      resolve(false);
    }
  });
}

/** Runs `steps` to the end, checking each signature on this thread. */
export function runNow<T>(steps: Steps<T>): T {
  let step = steps.next();
  while (!step.done) step = steps.next(isKeyImport(step.value) ? importP384SpkiOutcome(step.value.importSpki) : checkNow(step.value));
  return step.value;
}

/**
 * Slots for thread-pool checks: at most `size` of ours on libuv's pool at once. A check that finds none free
 * runs on the calling thread instead of queueing. So the pool never holds more than `size` verifies (it is
 * shared with file I/O: the audit's write and fdatasync must not wait behind a queue of verifies), and the event
 * loop, with a verify to do and the pool busy, does it itself rather than wait idle: on a busy machine that keeps
 * the CPU per release where verifying on the event loop alone has it (bench/workers: 0.99-1.01x at 16 and 32 in
 * flight, where handing every check to the pool and queueing cost 1.08-1.11x).
 */
export class PoolSlots {
  #free: number;

  /** @param size - checks on the pool at once, at most (>= 1) */
  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('PoolSlots size must be a positive integer');
    this.#free = size;
  }

  /** Takes a slot if one is free. */
  take(): boolean {
    if (this.#free === 0) return false;
    this.#free--;
    return true;
  }

  /** Gives back a slot taken with {@link take}. */
  release(): void {
    this.#free++;
  }
}

async function checkInSlot(check: SignatureCheck, slots: PoolSlots): Promise<boolean> {
  try {
    return await checkOnPool(check);
  } finally {
    slots.release();
  }
}

/**
 * Runs `steps` to the end, each signature checked on libuv's thread pool when `slots` has one free, else on
 * this thread. Everything between two checks runs synchronously on the calling thread, as in {@link runNow};
 * the steps before the first check run before this returns its promise.
 */
export async function runOnPool<T>(steps: Steps<T>, slots: PoolSlots): Promise<T> {
  let step = steps.next();
  while (!step.done) {
    const check = step.value;
    if (isKeyImport(check)) step = steps.next(await importLater(check));
    else step = steps.next(slots.take() ? await checkInSlot(check, slots) : checkNow(check));
  }
  return step.value;
}
