import type { BrokerErrorCode } from './codes.js';
import { isObject } from './claims.js';

/** One released secret: an item of the `POST /v1/secrets` answer. */
export interface ReleasedSecret {
  readonly name: string;
  readonly version: number;
  readonly ttlSeconds: number;
  /** Compact JWE (RSA-OAEP-256 + A256GCM) to the attested key, wrapping a JWS signed by the broker (see claims.ts). */
  readonly jwe: string;
}

/** The body of a successful `POST /v1/secrets`: one item per requested name. */
export interface SecretsAnswer {
  readonly secrets: readonly ReleasedSecret[];
}

/** The body of `GET /v1/challenge`. */
export interface ChallengeAnswer {
  /** Base64 of a CHALLENGE_NONCE_BYTES nonce (challenge.ts), to put in the attestation document. */
  readonly nonce: string;
  /** Broker wall clock (ms) after which the nonce is refused. */
  readonly expiresAt: number;
}

/** The body of every error answer. Unauthenticated: an agent takes only a known code from it. */
export interface ErrorAnswer {
  readonly error: { readonly code: BrokerErrorCode; readonly message: string };
}

/**
 * An item of a secrets answer as the agent receives it: unsigned (any relay
 * can rewrite it), so nothing in it is believed until the signed claims inside
 * `jwe` confirm it.
 */
export type ReceivedItem = { readonly [K in keyof ReleasedSecret]?: unknown };

/** The items of a secrets answer body, or undefined when it has no `secrets` array. Non-object items match no name. */
export function receivedItems(body: unknown): readonly ReceivedItem[] | undefined {
  const items = isObject(body) ? body.secrets : undefined;
  return Array.isArray(items) ? items.map((item: unknown): ReceivedItem => (isObject(item) ? item : {})) : undefined;
}
