/**
 * The native addon, without ever connecting a vsock socket: address encoding,
 * the fd-driven Duplex (over a FIFO), and every error path.
 */
import { describe, expect, it } from 'vitest';
import { constants, mkdtempSync, openSync, rmSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as os, tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectVsock, encodeSockaddrVm, fdStreamForTesting, loadAddon, nsmClientForFd, openNsmDevice, VsockError, PARENT_CID } from '../../vsock-shim/vsock.js';
import { NsmError } from '../../vsock-shim/nsm/messages.js';

const addon = loadAddon();

describe('sockaddr_vm encoding', () => {
  it('lays out family, port and CID in host byte order', () => {
    expect(encodeSockaddrVm(PARENT_CID, 8000, true).toString('hex')).toBe('2800' + '0000' + '401f0000' + '03000000' + '00000000');
    expect(encodeSockaddrVm(0xffffffff, 1, true).toString('hex')).toBe('28000000' + '01000000' + 'ffffffff' + '00000000');
    expect(encodeSockaddrVm(3, 8000, false).toString('hex')).toBe('0028' + '0000' + '00001f40' + '00000003' + '00000000');
    expect(encodeSockaddrVm(3, 8000)).toHaveLength(16);
  });
  it.each([[-1, 1], [3, -1], [2 ** 32, 1], [3, 2 ** 32], [1.5, 1], [Number.NaN, 1]])('rejects CID %s port %s', (cid, port) => {
    expect(() => encodeSockaddrVm(cid, port)).toThrow(VsockError);
  });
  it('connectVsock validates before touching a socket', () => {
    expect(() => connectVsock(3, 2 ** 32)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe.runIf(process.platform === 'linux')('native addon', () => {
  it('is built by npm ci and reports AF_VSOCK support', () => {
    expect(addon).not.toBeNull();
    expect(addon!.available()).toBe(true);
  });

  it('drives a non-blocking descriptor as a Duplex with backpressure (over a FIFO)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-fifo-'));
    try {
      const path = join(dir, 'loop');
      execFileSync('mkfifo', [path]);
      // A FIFO opened read-write is its own peer: what is written comes back.
      const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
      const stream = fdStreamForTesting(fd);
      const data = randomBytes(1024 * 1024); // 16 times the pipe buffer: writes must wait for reads
      const received: Buffer[] = [];
      let got = 0;
      const done = new Promise<void>((resolve, reject) => {
        stream.on('data', (chunk: Buffer) => {
          received.push(chunk);
          got += chunk.length;
          if (got >= data.length) resolve();
        });
        stream.on('error', reject);
      });
      for (let i = 0; i < data.length; i += 100_000) stream.write(data.subarray(i, i + 100_000));
      await done;
      expect(Buffer.concat(received).equals(data)).toBe(true);
      stream.destroy();
      await new Promise((r) => stream.once('close', r));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const sysError = (code: keyof typeof os.errno, syscall: string): unknown => expect.objectContaining({ code, errno: os.errno[code], syscall });

  it('reports errno failures as typed errors, never crashes', () => {
    expect(() => addon!.read(987_654, Buffer.alloc(8))).toThrow(sysError('EBADF', 'read'));
    expect(() => addon!.write(987_654, Buffer.alloc(8))).toThrow(sysError('EBADF', 'write'));
    expect(() => addon!.close(987_654)).toThrow(sysError('EBADF', 'close'));
    expect(() => addon!.connect(0, Buffer.alloc(3))).toThrow(TypeError);
    expect(() => addon!.read(0, 'not a buffer' as unknown as Buffer)).toThrow(TypeError);
    expect(() => addon!.watch(0, 'not a function' as unknown as () => void)).toThrow(TypeError);
  });

  it('has one return convention: a result, null for "would block", or a typed error (here on a FIFO, not a socket)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-fifo-'));
    const path = join(dir, 'loop');
    execFileSync('mkfifo', [path]);
    const fd = openSync(path, constants.O_RDWR | constants.O_NONBLOCK);
    try {
      expect(addon!.read(fd, Buffer.alloc(8))).toBeNull(); // nothing written yet
      const chunk = Buffer.alloc(64 * 1024);
      let written = 0;
      let n: number | null;
      while ((n = addon!.write(fd, chunk)) !== null) written += n; // until the pipe buffer is full
      expect(written).toBeGreaterThan(0);
      expect(addon!.read(fd, Buffer.alloc(8))).toBe(8);
      expect(() => addon!.accept(fd)).toThrow(sysError('ENOTSOCK', 'accept'));
      expect(() => addon!.connect(fd, encodeSockaddrVm(PARENT_CID, 8000))).toThrow(sysError('ENOTSOCK', 'connect'));
      expect(() => addon!.finishConnect(fd)).toThrow(sysError('ENOTSOCK', 'getsockopt'));
      expect(() => addon!.bindListen(fd, encodeSockaddrVm(PARENT_CID, 8000), 1)).toThrow(sysError('ENOTSOCK', 'bind'));
    } finally {
      addon!.close(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('reports a missing /dev/nsm and a failing NSM ioctl as NsmError', async () => {
    expect(() => openNsmDevice()).toThrow(expect.objectContaining({ code: 'NSM_UNAVAILABLE' }));
    const fd = openSync('/dev/null', 'r+');
    const nsm = nsmClientForFd(fd); // not an NSM: the ioctl fails (ENOTTY), off the JS thread
    await expect(nsm.getRandom()).rejects.toBeInstanceOf(NsmError);
    await expect(nsm.getRandom()).rejects.toMatchObject({ code: 'NSM_ERROR', message: expect.stringMatching(/ENOTTY/), cause: sysError('ENOTTY', 'NSM ioctl') });
    await nsm.close();
    await expect(nsm.getRandom()).rejects.toMatchObject({ code: 'NSM_UNAVAILABLE' });
  });

  it('refuses oversized NSM requests before the ioctl', () => {
    expect(() => addon!.nsmRequest(0, Buffer.alloc(4097))).toThrow(sysError('EMSGSIZE', 'nsmRequest'));
    expect(() => addon!.nsmRequest(0, Buffer.alloc(0))).toThrow(sysError('EMSGSIZE', 'nsmRequest'));
  });
});
