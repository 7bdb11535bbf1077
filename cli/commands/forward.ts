import { Forwarder, listenTcp, parseDestination, type Listener } from '../../vsock-shim/forwarder.js';
import { listenVsock } from '../../vsock-shim/vsock.js';
import { UsageError, listenProblem } from '../errors.js';
import { parseCommand } from '../args.js';
import { parseDuration } from '../parse.js';
import { parseHostPort } from '../../lib/host-port.js';
import type { CliIo } from '../io.js';

export const FORWARD_USAGE = `Usage: keygate forward --listen vsock:PORT|tcp:HOST:PORT --allow HOST:PORT [--allow ...]
                       [--max-connections N] [--idle-timeout DUR] [--relay auto|js]

Runs on the parent instance: relays enclave connections (HTTP CONNECT) to
allow-listed destinations only; anything else is refused and logged.
Port 9000 on vsock is nitro-cli's boot heartbeat: do not use it.
--relay auto (default) moves a TCP tunnel's bytes in the kernel (splice) when
the native addon is built, else through Node streams; js: always Node streams.
`;

/** `keygate forward`: relay until SIGINT/SIGTERM. */
export async function forwardCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(argv, {
    listen: { type: 'string' },
    allow: { type: 'string', multiple: true },
    'max-connections': { type: 'string' },
    'idle-timeout': { type: 'string' },
    relay: { type: 'string' },
  });
  if (values.help) {
    io.out(FORWARD_USAGE);
    return 0;
  }
  if (!values.listen) throw new UsageError('--listen is required');
  if (!values.allow?.length) throw new UsageError('at least one --allow HOST:PORT is required');
  let allow;
  try {
    allow = values.allow.map(parseDestination);
  } catch (err) {
    throw new UsageError(`--allow: ${(err as Error).message}`);
  }
  const max = values['max-connections'] === undefined ? 64 : Number(values['max-connections']);
  if (!Number.isInteger(max) || max < 1 || max > 100_000) throw new UsageError('--max-connections must be a positive integer');
  const relay = values.relay ?? 'auto';
  if (relay !== 'auto' && relay !== 'js') throw new UsageError('--relay must be auto or js');
  const forwarder = new Forwarder({
    relay,
    allow,
    maxConnections: max,
    idleTimeoutMs: values['idle-timeout'] === undefined ? 60_000 : parseDuration(values['idle-timeout'], '--idle-timeout'),
    log: (event) => io.err(`${JSON.stringify({ time: new Date().toISOString(), ...event })}\n`),
  });
  let listener: Listener;
  const tcp = values.listen.startsWith('tcp:') ? parseHostPort(values.listen.slice(4)) : undefined;
  const vsock = /^vsock:(\d{1,10})$/.exec(values.listen);
  if (tcp) {
    try {
      listener = await listenTcp(forwarder, tcp.host, tcp.port);
    } catch (err) {
      const problem = listenProblem(err);
      if (problem) throw new UsageError(`--listen ${values.listen}: ${problem}`, { hint: false });
      throw err;
    }
  }
  else if (vsock) {
    const port = Number(vsock[1]);
    if (port === 9000) throw new UsageError('vsock port 9000 is the nitro-cli boot heartbeat; choose another');
    try {
      listener = await listenVsock(port, (stream, peer) => forwarder.handle(stream, peer));
    } catch (err) {
      throw new UsageError(`cannot listen on ${values.listen}: ${(err as Error).message}`, { hint: false });
    }
  } else throw new UsageError('--listen must be vsock:PORT or tcp:HOST:PORT');
  // Handlers first: whoever reads the "listening" line may signal at once, and must get a clean close.
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  io.out(`keygate forward listening on ${listener.address}; allowed: ${allow.map((d) => `${d.host}:${d.port}`).join(', ')}; relay: ${forwarder.splicing ? 'splice' : 'streams'}\n`);
  await stopped;
  await listener.close();
  return 0;
}
