import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  CHALLENGE_MAC_BYTES as MAC_BYTES,
  CHALLENGE_NONCE_BYTES as NONCE_BYTES,
  CHALLENGE_RANDOM_BYTES as RANDOM_BYTES,
  CHALLENGE_TIME_BYTES as TIME_BYTES,
} from './protocol/index.js';

/** Why a nonce was refused by the check itself (a replay is the nonce registry's answer: broker/nonce). */
export type NonceProblem = 'malformed' | 'forged' | 'expired';

/** An authentic, unexpired nonce: its registry id, and until when any replica may still accept it. */
export type NonceCheck = { readonly ok: true; readonly id: string; readonly rememberUntil: number } | { readonly ok: false; readonly problem: NonceProblem };

export interface ChallengeSettings {
  /** How long a nonce is accepted after issue. Default 30 s. */
  readonly ttlMs?: number;
  /** Clock difference tolerated between replicas. Default 5 s. */
  readonly skewMs?: number;
}

/**
 * Stateless challenge nonces in the protocol's format (broker/protocol/challenge.ts):
 * issue time || random || truncated HMAC-SHA-256, under a key every replica shares. Any
 * replica accepts any replica's nonce without shared state. Pure (no I/O, no
 * memory): single use is the NonceRegistry's job (broker/nonce), asked only
 * for nonces that pass `check`, so forged or stale junk never reaches it.
 */
export class ChallengeService {
  readonly #key: Buffer;
  readonly #ttl: number;
  readonly #skew: number;

  constructor(key: Uint8Array, settings: ChallengeSettings = {}) {
    if (key.length < 32) throw new RangeError('challenge key must be at least 32 bytes');
    this.#key = Buffer.from(key);
    this.#ttl = settings.ttlMs ?? 30_000;
    this.#skew = settings.skewMs ?? 5_000;
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

  /**
   * Whether `nonce` is one of ours (any replica's) and still inside its
   * lifetime. `rememberUntil` adds the tolerated skew: a replica whose clock is
   * that far behind still accepts the nonce until then.
   */
  check(nonce: Uint8Array | null, now: number): NonceCheck {
    if (!nonce || nonce.length !== NONCE_BYTES) return { ok: false, problem: 'malformed' };
    const buf = Buffer.from(nonce);
    const prefix = buf.subarray(0, TIME_BYTES + RANDOM_BYTES);
    if (!timingSafeEqual(this.#mac(prefix), buf.subarray(TIME_BYTES + RANDOM_BYTES))) return { ok: false, problem: 'forged' };
    const issued = Number(buf.readBigUInt64BE(0));
    if (issued > now + this.#skew || now > issued + this.#ttl) return { ok: false, problem: 'expired' };
    return { ok: true, id: buf.toString('hex'), rememberUntil: issued + this.#ttl + this.#skew };
  }
}
