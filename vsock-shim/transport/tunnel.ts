import type { Duplex } from 'node:stream';
import { TransportError, type Transport } from './transport.js';

/**
 * Opens an HTTP CONNECT tunnel to `target` through `inner` (the parent's
 * forwarder over vsock in production) and hands back the stream once the
 * forwarder has connected it.
 */
export function tunnelTransport(inner: Transport, target: string, timeoutMs = 10_000): Transport {
  return {
    description: target,
    connect: () => {
      throw new TransportError('TRANSPORT_INVALID', 'a tunnel opens asynchronously: use connectAsync');
    },
    connectAsync: (): Promise<Duplex> =>
      new Promise((resolve, reject) => {
        const stream = inner.connect();
        let head = Buffer.alloc(0);
        const fail = (message: string): void => {
          clearTimeout(timer);
          stream.destroy();
          reject(new TransportError('TRANSPORT_UNAVAILABLE', message));
        };
        const timer = setTimeout(() => fail(`tunnel to ${target} not established within ${timeoutMs} ms`), timeoutMs);
        const onData = (chunk: Buffer): void => {
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) {
            if (head.length > 8192) fail('forwarder answer too large');
            return;
          }
          clearTimeout(timer);
          stream.off('data', onData);
          stream.off('error', onError);
          const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.toString('latin1'))?.[1];
          if (status !== '200') {
            stream.destroy();
            reject(new TransportError('TRANSPORT_UNAVAILABLE', `forwarder refused the tunnel to ${target} (HTTP ${status ?? '?'})`));
            return;
          }
          stream.pause();
          const rest = head.subarray(end + 4);
          if (rest.length) stream.unshift(rest);
          resolve(stream);
        };
        const onError = (err: Error): void => fail(`tunnel to ${target} failed: ${err.message}`);
        stream.on('data', onData);
        stream.on('error', onError);
        stream.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
      }),
  };
}
