import * as nodeCrypto from 'node:crypto';
import { timingSafeEqual } from 'node:crypto';

// crypto.hash (Node >= 20.12) digests in one call without building a Hash stream object, about half the
// cost for a certificate-sized input; package.json allows Node 20.10, hence the fallback.
const oneShotHash = (nodeCrypto as Partial<Pick<typeof nodeCrypto, 'hash'>>).hash;

/** Lower-case hex SHA-256 of `data` (a string is hashed as its UTF-8 bytes). */
export const sha256Hex: (data: Uint8Array | string) => string = oneShotHash
  ? (data) => oneShotHash('sha256', data, 'hex')
  : (data) => nodeCrypto.createHash('sha256').update(data).digest('hex');

/** Lower-case hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * Strict hex decoding: an even number of hex digits, nothing else. Returns
 * undefined instead of silently truncating the way Buffer.from(s, 'hex') does.
 */
export function fromHex(text: string): Uint8Array | undefined {
  if (text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, 'hex'));
}

/** Byte equality; constant time for equal lengths (nonces and PCRs are compared with it). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && timingSafeEqual(a, b);
}

/** True when every byte is zero (an all-zero PCR marks a debug enclave). */
export function isAllZero(bytes: Uint8Array): boolean {
  for (const b of bytes) if (b !== 0) return false;
  return true;
}
