import { verify as cryptoVerify, type KeyObject } from 'node:crypto';

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

/** Verification steps: yield each signature check, receive whether it verified, return the result. */
export type Steps<T> = Generator<SignatureCheck, T, boolean>;

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
  while (!step.done) step = steps.next(checkNow(step.value));
  return step.value;
}

/**
 * At most `size` thread-pool jobs of ours at once; the rest wait here, in arrival order. libuv's pool is
 * shared with file I/O (the audit's write and fdatasync): keeping verifies below the pool's size leaves a
 * thread for them, where an unbounded queue of verifies would hold each fdatasync behind every verify queued
 * before it.
 */
export class PoolGate {
  #free: number;
  readonly #waiting: Array<() => void> = [];

  /** @param size - jobs in flight at most (>= 1) */
  constructor(size: number) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError('PoolGate size must be a positive integer');
    this.#free = size;
  }

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await job();
    } finally {
      // Handed straight to the next waiter (the slot never looks free in between), or given back.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

/**
 * Runs `steps` to the end, each signature checked on libuv's thread pool through `gate`. Everything
 * between two checks runs synchronously on the calling thread, as in {@link runNow}; the steps before the
 * first check run before this returns its promise.
 */
export async function runOnPool<T>(steps: Steps<T>, gate: PoolGate): Promise<T> {
  let step = steps.next();
  while (!step.done) {
    const check = step.value;
    step = steps.next(await gate.run(() => checkOnPool(check)));
  }
  return step.value;
}
