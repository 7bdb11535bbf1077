import { connect, type Socket } from 'node:net';

/** A raw HTTP client socket on a broker's port. */
export interface RawClient {
  readonly socket: Socket;
  /** Whether the server has closed the connection. */
  closed(): boolean;
  /** Everything received so far, as latin1 text. */
  received(): string;
}

/**
 * Connects a raw socket to `url`'s port on 127.0.0.1 that records what it receives and whether the server
 * closed it; the socket is pushed onto `track` so the suite can destroy it afterwards.
 */
export async function rawClient(url: string, track: Socket[]): Promise<RawClient> {
  const { port } = new URL(url);
  const socket = connect({ port: Number(port), host: '127.0.0.1' });
  track.push(socket);
  let closed = false;
  let out = '';
  socket.on('data', (d: Buffer) => (out += d.toString('latin1')));
  socket.on('error', () => {});
  socket.on('close', () => (closed = true));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  return { socket, closed: () => closed, received: () => out };
}
