import { constants, verify, type KeyObject } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import { CHANNEL_BINDING_BYTES, CHANNEL_BINDING_CONTEXT, CHANNEL_BINDING_LABEL } from '../protocol/index.js';

/** The connection's RFC 9266 tls-exporter value (TLS 1.3): the same on both ends of one connection only. */
export function exporterOf(socket: TLSSocket): Buffer {
  // RFC 8446 7.5: in TLS 1.3 an empty context is the same as none (RFC 9266 uses none).
  return socket.exportKeyingMaterial(CHANNEL_BINDING_BYTES, CHANNEL_BINDING_LABEL, Buffer.alloc(0));
}

/** What the attested key signs for a connection. */
export function bindingInput(exporter: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(CHANNEL_BINDING_CONTEXT, 'utf8'), exporter]);
}

/** Connections already proven bound to a key (RFC 7638-ish key id): one RSA verify per connection and key, not per call. */
const bound = new WeakMap<TLSSocket, Set<string>>();

/**
 * True when `signature` (base64url RSA-PSS SHA-256) is the attested key's signature of this connection's
 * exporter: the caller holds the key the token names, on this very connection.
 */
export function isBound(socket: TLSSocket, key: KeyObject, keyId: string, signature: string | undefined): boolean {
  if (bound.get(socket)?.has(keyId)) return true;
  if (typeof signature !== 'string' || !/^[A-Za-z0-9_-]{16,1024}$/.test(signature)) return false;
  let ok = false;
  try {
    ok = verify('sha256', bindingInput(exporterOf(socket)), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, Buffer.from(signature, 'base64url'));
  } catch {
    ok = false;
  }
  if (ok) {
    const keys = bound.get(socket) ?? new Set<string>();
    keys.add(keyId);
    bound.set(socket, keys);
  }
  return ok;
}
