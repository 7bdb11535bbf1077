import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { Duplex } from 'node:stream';
import type { Listener } from './forwarder.js';
import { NsmClient, type Nsm, type NsmTransport } from './nsm/client.js';
import { NsmError } from './nsm/messages.js';
import { CodedError } from '../lib/coded-error.js';

/**
 * The native addon's surface (vsock-shim/native/keygate_vsock.c). Every call
 * returns its result or throws an AddonErrnoError; "would block" is null
 * (read, write, accept) and "connection in progress" is false (connect).
 */
export interface VsockAddon {
  available(): boolean;
  socket(): number;
  /** true: connected; false: in progress, wait for writability, then finishConnect. */
  connect(fd: number, addr: Buffer): boolean;
  bindListen(fd: number, addr: Buffer, backlog: number): number;
  accept(fd: number): { fd: number; cid: number; port: number } | null;
  read(fd: number, buf: Buffer): number | null;
  write(fd: number, buf: Buffer): number | null;
  /** Throws the error of a non-blocking connect, if it failed. */
  finishConnect(fd: number): number;
  shutdownWrite(fd: number): number;
  close(fd: number): number;
  watch(fd: number, cb: (status: number, events: number) => void): object;
  setEvents(watcher: object, events: number): number;
  unwatch(watcher: object): number;
  nsmOpen(): number;
  nsmRequest(fd: number, request: Buffer): Promise<Buffer>;
  readonly READABLE: number;
  readonly WRITABLE: number;
}

/** What the addon throws: a system error as Node reports them (code "EBADF", errno as in os.constants.errno). */
export interface AddonErrnoError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly syscall: string;
}

export const AF_VSOCK = 40;
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_CID_HOST = 2;
/** The Nitro parent instance, as seen from inside an enclave. */
export const PARENT_CID = 3;

/** vsock is unusable here (no addon, no AF_VSOCK) or a socket call failed. */
export class VsockError extends CodedError<string> {
  override readonly name = 'VsockError';
}

/**
 * The addon was not built: the package was installed without a C toolchain
 * (its install script never fails the install, so the broker, the CLI and the
 * verifier work everywhere). The message says how to build it.
 */
export class NativeAddonMissingError extends CodedError<'NATIVE_ADDON_MISSING'> {
  override readonly name = 'NativeAddonMissingError';
}

/** Where the addon is looked for, relative to this module. */
const ADDON_PATHS = [
  // From the sources (tests), and next to a bundle (dist-enclave/app.mjs + native/build/Release/).
  './native/build/Release/keygate_vsock.node',
  // From dist/ (the built package).
  '../../vsock-shim/native/build/Release/keygate_vsock.node',
];

function missingAddon(what: string): NativeAddonMissingError {
  return new NativeAddonMissingError(
    'NATIVE_ADDON_MISSING',
    `${what} needs the vsock/NSM native addon, which is not built (looked for ${ADDON_PATHS.map((p) => new URL(p, import.meta.url).pathname).join(', ')}). ` +
      'Install python3, make and a C/C++ compiler (Debian/Ubuntu: apt-get install python3 make g++; Amazon Linux: dnf install python3 make gcc-c++), ' +
      'then run "npm run build:native" in the keygate package directory (node_modules/keygate).',
  );
}

let cached: VsockAddon | null | undefined;

/** The addon, or null when it was not built for this platform. */
export function loadAddon(): VsockAddon | null {
  if (cached !== undefined) return cached;
  const require = createRequire(import.meta.url);
  for (const path of ADDON_PATHS) {
    try {
      cached = require(path) as VsockAddon;
      return cached;
    } catch {
      // try the next location
    }
  }
  cached = null;
  return cached;
}

function builtAddon(what = 'vsock'): VsockAddon {
  const addon = loadAddon();
  if (!addon) throw missingAddon(what);
  return addon;
}

function requireAddon(what: string): VsockAddon {
  const addon = builtAddon(what);
  if (!addon.available()) throw new VsockError('VSOCK_UNAVAILABLE', 'AF_VSOCK is not available on this platform');
  return addon;
}

function wrapError(err: unknown, what: string): VsockError {
  const code = (err as Partial<AddonErrnoError>).code ?? 'EVSOCK';
  return new VsockError(code, `${what}: ${(err as Error).message}`, { cause: err });
}

/**
 * struct sockaddr_vm (16 bytes, host byte order): u16 family @0, u16
 * reserved @2, u32 port @4, u32 cid @8, zero padding @12..15.
 */
export function encodeSockaddrVm(cid: number, port: number, littleEndian = endianness() === 'LE'): Buffer {
  for (const [name, v] of [['CID', cid], ['port', port]] as const) {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new VsockError('EINVAL', `vsock ${name} must be an integer in 0..4294967295, got ${v}`);
  }
  const buf = Buffer.alloc(16);
  if (littleEndian) {
    buf.writeUInt16LE(AF_VSOCK, 0);
    buf.writeUInt32LE(port, 4);
    buf.writeUInt32LE(cid, 8);
  } else {
    buf.writeUInt16BE(AF_VSOCK, 0);
    buf.writeUInt32BE(port, 4);
    buf.writeUInt32BE(cid, 8);
  }
  return buf;
}

const READ_CHUNK = 64 * 1024;

/**
 * A Duplex over a non-blocking descriptor driven by the addon's poll
 * watcher: reads when the consumer wants data (backpressure through push()),
 * writes until the kernel buffer is full and resumes on writability.
 */
export class FdStream extends Duplex {
  readonly #addon: VsockAddon;
  readonly #fd: number;
  readonly #watcher: object;
  #connecting: boolean;
  #wantRead = false;
  #pending: { data: Buffer; callback: (err?: Error | null) => void } | undefined;
  #events = 0;
  #closed = false;

  constructor(addon: VsockAddon, fd: number, connecting = false) {
    super({ allowHalfOpen: true });
    this.#addon = addon;
    this.#fd = fd;
    this.#connecting = connecting;
    this.#watcher = addon.watch(fd, (status, events) => this.#onEvent(status, events));
    this.#update();
  }

  #update(): void {
    if (this.#closed) return;
    const events = (this.#wantRead && !this.#connecting ? this.#addon.READABLE : 0) | (this.#connecting || this.#pending ? this.#addon.WRITABLE : 0);
    if (events !== this.#events) {
      this.#events = events;
      this.#addon.setEvents(this.#watcher, events);
    }
  }

  #onEvent(status: number, events: number): void {
    if (this.#closed) return;
    if (status < 0) {
      this.destroy(new VsockError('EPOLL', `poll failed (${status})`));
      return;
    }
    if (this.#connecting && events & this.#addon.WRITABLE) {
      try {
        this.#addon.finishConnect(this.#fd);
      } catch (err) {
        this.destroy(wrapError(err, 'vsock connect'));
        return;
      }
      this.#connecting = false;
      this.emit('connect');
    }
    if (events & this.#addon.WRITABLE) this.#flush();
    if (events & this.#addon.READABLE) this.#readNow();
    this.#update();
  }

  #readNow(): void {
    while (this.#wantRead && !this.#closed) {
      const buf = Buffer.allocUnsafe(READ_CHUNK);
      let n: number | null;
      try {
        n = this.#addon.read(this.#fd, buf);
      } catch (err) {
        this.destroy(wrapError(err, 'vsock read'));
        return;
      }
      if (n === null) return;
      if (n === 0) {
        this.#wantRead = false;
        this.push(null);
        return;
      }
      this.#wantRead = this.push(buf.subarray(0, n));
    }
  }

  #flush(): void {
    const pending = this.#pending;
    if (!pending || this.#connecting) return;
    let data = pending.data;
    while (data.length) {
      let n: number | null;
      try {
        n = this.#addon.write(this.#fd, data);
      } catch (err) {
        this.#pending = undefined;
        pending.callback(wrapError(err, 'vsock write'));
        return;
      }
      if (n === null) {
        this.#pending = { data, callback: pending.callback };
        return;
      }
      data = data.subarray(n);
    }
    this.#pending = undefined;
    pending.callback();
  }

  override _read(): void {
    this.#wantRead = true;
    if (!this.#connecting) this.#readNow();
    this.#update();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.#pending = { data: chunk, callback };
    this.#flush();
    this.#update();
  }

  override _final(callback: (err?: Error | null) => void): void {
    try {
      this.#addon.shutdownWrite(this.#fd);
      callback();
    } catch (err) {
      callback(wrapError(err, 'vsock shutdown'));
    }
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    if (!this.#closed) {
      this.#closed = true;
      this.#addon.unwatch(this.#watcher);
      try {
        this.#addon.close(this.#fd);
      } catch {
        // already closed: nothing more to release
      }
    }
    this.#pending?.callback(err ?? new VsockError('ECLOSED', 'stream destroyed'));
    this.#pending = undefined;
    callback(err);
  }
}

/** Connects an AF_VSOCK stream to `cid:port` (CID 3 = the parent). Errors arrive on the stream. */
export function connectVsock(cid: number, port: number): Duplex {
  const addr = encodeSockaddrVm(cid, port);
  const addon = requireAddon(`connectVsock(${cid}, ${port})`);
  let fd: number;
  try {
    fd = addon.socket();
  } catch (err) {
    throw wrapError(err, 'vsock socket');
  }
  let connected: boolean;
  try {
    connected = addon.connect(fd, addr);
  } catch (err) {
    addon.close(fd);
    throw wrapError(err, `vsock connect to ${cid}:${port}`);
  }
  return new FdStream(addon, fd, !connected);
}

/** Listens on vsock `port` (any CID) and hands each accepted stream to `onConnection`. */
export async function listenVsock(port: number, onConnection: (stream: Duplex, peer: string) => void, backlog = 128): Promise<Listener> {
  const addr = encodeSockaddrVm(VMADDR_CID_ANY, port);
  const addon = requireAddon(`listenVsock(${port})`);
  let fd: number;
  try {
    fd = addon.socket();
    addon.bindListen(fd, addr, backlog);
  } catch (err) {
    throw wrapError(err, `vsock listen on port ${port}`);
  }
  const watcher = addon.watch(fd, () => {
    for (;;) {
      let peer: ReturnType<VsockAddon['accept']>;
      try {
        peer = addon.accept(fd);
      } catch {
        return;
      }
      if (!peer) return;
      onConnection(new FdStream(addon, peer.fd), `vsock:${peer.cid}:${peer.port}`);
    }
  });
  addon.setEvents(watcher, addon.READABLE);
  return {
    address: `vsock:${port}`,
    close: async () => {
      addon.unwatch(watcher);
      addon.close(fd);
    },
  };
}

/** /dev/nsm through the addon's ioctl, off the JS thread. */
class DeviceTransport implements NsmTransport {
  #fd: number | undefined;
  constructor(
    private readonly addon: VsockAddon,
    fd: number,
  ) {
    this.#fd = fd;
  }

  async exchange(request: Uint8Array): Promise<Uint8Array> {
    if (this.#fd === undefined) throw new NsmError('NSM_UNAVAILABLE', 'the NSM device is closed');
    try {
      return new Uint8Array(await this.addon.nsmRequest(this.#fd, Buffer.from(request)));
    } catch (cause) {
      throw new NsmError('NSM_ERROR', `NSM request failed: ${(cause as Error).message}`, { cause });
    }
  }

  async close(): Promise<void> {
    if (this.#fd !== undefined) this.addon.close(this.#fd);
    this.#fd = undefined;
  }
}

/** Opens the real Nitro Security Module (/dev/nsm). */
export function openNsmDevice(): Nsm {
  const addon = builtAddon('openNsmDevice (/dev/nsm)');
  let fd: number;
  try {
    fd = addon.nsmOpen();
  } catch (cause) {
    throw new NsmError('NSM_UNAVAILABLE', `cannot open /dev/nsm: ${(cause as Error).message} (not inside a Nitro Enclave?)`, { cause });
  }
  return new NsmClient(new DeviceTransport(addon, fd));
}

/** @internal Wraps any non-blocking descriptor (tests drive FdStream over a FIFO). */
export function fdStreamForTesting(fd: number): FdStream {
  return new FdStream(builtAddon(), fd);
}

/** @internal Sends a raw request down any descriptor's NSM ioctl (tests use a non-NSM fd for the error path). */
export function nsmClientForFd(fd: number): Nsm {
  return new NsmClient(new DeviceTransport(builtAddon(), fd));
}
