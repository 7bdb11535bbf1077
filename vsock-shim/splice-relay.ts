import type { Socket } from 'node:net';
import { loadAddon } from './vsock.js';

/**
 * The native addon's splice relay (vsock-shim/native/keygate_vsock.c, "splice relay"): two
 * connected sockets, bytes moved both ways by the kernel (splice through a pipe) on this
 * thread's event loop, half-close relayed, an error on one side turned into a reset of the
 * other, idle relays closed. Optional: an addon built before it existed, or none at all,
 * leaves the forwarder on its Node-streams relay.
 */
interface SpliceAddon {
  relay(
    fdA: number,
    fdB: number,
    idleMs: number,
    toB: Buffer | null,
    toA: Buffer | null,
    callback: (reason: string, code: string | null, side: string | null, bytesAB: number, bytesBA: number) => void,
  ): object;
  relayClose(handle: object): boolean;
  relayStats(): SpliceRelayStats;
}

export interface SpliceRelayStats {
  /** Relays running on this thread. */
  readonly active: number;
  /** Empty pipes kept for reuse (two descriptors each, at most 32 pipes). */
  readonly pooledPipes: number;
}

export interface SpliceRelayEnd {
  /** "end": both directions ended; "idle": no traffic for idleMs; "closed": close(); "error": see code and side. */
  readonly reason: 'end' | 'idle' | 'closed' | 'error';
  /** errno name (ECONNRESET, EPIPE, ...) when reason is "error". */
  readonly code: string | null;
  /** The socket that failed: "a" (first) or "b" (second), null for neither. */
  readonly side: 'a' | 'b' | null;
  readonly bytesAB: number;
  readonly bytesBA: number;
}

export interface SpliceRelay {
  /** Ends the relay now (both sockets closed); onEnd follows with reason "closed". */
  close(): void;
}

export interface SpliceRelayOptions {
  /** Close both sockets after this long with no bytes moved either way (0: never). */
  readonly idleMs: number;
  /** Bytes to deliver to b (resp. a) before anything read from a (resp. b). */
  readonly toB?: Buffer;
  readonly toA?: Buffer;
  /** Called once, after both sockets are closed. */
  readonly onEnd: (end: SpliceRelayEnd) => void;
}

function spliceAddon(): SpliceAddon | undefined {
  const addon = loadAddon() as (object & Partial<SpliceAddon>) | null;
  return addon && typeof addon.relay === 'function' && typeof addon.relayClose === 'function' && typeof addon.relayStats === 'function' ? (addon as SpliceAddon) : undefined;
}

/** true when this process can relay with splice (Linux, addon built with the relay). */
export function spliceRelayAvailable(): boolean {
  return process.platform === 'linux' && spliceAddon() !== undefined;
}

/** The splice relays' counters, or undefined without the addon relay. */
export function spliceRelayStats(): SpliceRelayStats | undefined {
  return spliceAddon()?.relayStats();
}

/** The OS descriptor under a connected net.Socket (libuv's TCP handle), or undefined. */
function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * Starts relaying between a and b in the kernel. The relay works on duplicates of the two
 * descriptors: the caller must close (destroy) both sockets right after, without reading or
 * writing them again. undefined (nothing started, nothing consumed): no addon relay, a socket
 * without a descriptor, or the relay could not be set up (e.g. out of descriptors).
 */
export function startSpliceRelay(a: Socket, b: Socket, options: SpliceRelayOptions): SpliceRelay | undefined {
  const addon = spliceAddon();
  const fdA = socketFd(a);
  const fdB = socketFd(b);
  if (!addon || fdA === undefined || fdB === undefined || a.destroyed || b.destroyed) return undefined;
  let handle: object;
  try {
    handle = addon.relay(fdA, fdB, options.idleMs, options.toB?.length ? options.toB : null, options.toA?.length ? options.toA : null, (reason, code, side, bytesAB, bytesBA) =>
      options.onEnd({ reason: reason as SpliceRelayEnd['reason'], code, side: side as SpliceRelayEnd['side'], bytesAB, bytesBA }),
    );
  } catch {
    return undefined;
  }
  return { close: () => void addon.relayClose(handle) };
}
