/**
 * The challenge nonce format, shared by the broker (which issues and checks
 * it) and the agent (which puts it in its attestation document): issue time
 * (milliseconds since the epoch, unsigned 64-bit big-endian) || random bytes
 * || HMAC-SHA-256 over both, truncated, under a key every replica shares.
 * Only the broker can check the MAC; the agent checks the length.
 */
export const CHALLENGE_TIME_BYTES = 8;
export const CHALLENGE_RANDOM_BYTES = 8;
export const CHALLENGE_MAC_BYTES = 16;
export const CHALLENGE_NONCE_BYTES = CHALLENGE_TIME_BYTES + CHALLENGE_RANDOM_BYTES + CHALLENGE_MAC_BYTES;
