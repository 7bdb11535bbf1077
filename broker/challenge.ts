import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  CHALLENGE_MAC_BYTES as MAC_BYTES,
  CHALLENGE_NONCE_BYTES as NONCE_BYTES,
  CHALLENGE_RANDOM_BYTES as RANDOM_BYTES,
  CHALLENGE_TIME_BYTES as TIME_BYTES,
} from './protocol/index.js';

/** Why a nonce was refused. */
export type NonceProblem = 'malformed' | 'forged' | 'expired' | 'used' | 'busy';

export interface ChallengeSettings {
  /** How long a nonce is accepted after issue. Default 30 s. */
  readonly ttlMs?: number;
  /** Clock difference tolerated between replicas. Default 5 s. */
  readonly skewMs?: number;
  /** Most used nonces remembered at once (bounded memory). Default 200 000. */
  readonly maxRemembered?: number;
}

/**
 * Stateless challenge nonces in the protocol's format (broker/protocol/challenge.ts):
 * issue time || random || truncated HMAC-SHA-256, under a key every replica shares. Any
 * replica accepts any replica's nonce without shared state; each replica
 * remembers the nonces it has consumed until they expire, so a document is
 * accepted at most once per replica.
 */
export class ChallengeService {
  readonly #key: Buffer;
  readonly #ttl: number;
  readonly #skew: number;
  readonly #max: number;
  readonly #used = new Map<string, number>();

  constructor(key: Uint8Array, settings: ChallengeSettings = {}) {
    if (key.length < 32) throw new RangeError('challenge key must be at least 32 bytes');
    this.#key = Buffer.from(key);
    this.#ttl = settings.ttlMs ?? 30_000;
    this.#skew = settings.skewMs ?? 5_000;
    this.#max = settings.maxRemembered ?? 200_000;
  }

  #mac(prefix: Uint8Array): Buffer {
    return createHmac('sha256', this.#key).update('keygate/challenge/v1').update(prefix).digest().subarray(0, MAC_BYTES);
  }

  /** A fresh nonce and when it stops being accepted. */
  issue(now: number): { nonce: Uint8Array; expiresAt: number } {
    const prefix = Buffer.alloc(TIME_BYTES + RANDOM_BYTES);
    prefix.writeBigUInt64BE(BigInt(now), 0);
    randomBytes(RANDOM_BYTES).copy(prefix, TIME_BYTES);
    return { nonce: new Uint8Array(Buffer.concat([prefix, this.#mac(prefix)])), expiresAt: now + this.#ttl };
  }

  /** Accepts `nonce` once: returns undefined when fresh, authentic and unused, else why not. */
  consume(nonce: Uint8Array | null, now: number): NonceProblem | undefined {
    if (!nonce || nonce.length !== NONCE_BYTES) return 'malformed';
    const buf = Buffer.from(nonce);
    const prefix = buf.subarray(0, TIME_BYTES + RANDOM_BYTES);
    if (!timingSafeEqual(this.#mac(prefix), buf.subarray(TIME_BYTES + RANDOM_BYTES))) return 'forged';
    const issued = Number(buf.readBigUInt64BE(0));
    if (issued > now + this.#skew || now > issued + this.#ttl) return 'expired';
    const id = buf.toString('hex');
    if (this.#used.has(id)) return 'used';
    if (this.#used.size >= this.#max) {
      this.#prune(now);
      if (this.#used.size >= this.#max) return 'busy';
    }
    this.#used.set(id, issued + this.#ttl + this.#skew);
    if (this.#used.size % 1024 === 0) this.#prune(now);
    return undefined;
  }

  #prune(now: number): void {
    for (const [id, expiry] of this.#used) if (expiry < now) this.#used.delete(id);
  }

  /** Nonces currently remembered. */
  get remembered(): number {
    return this.#used.size;
  }
}
