import cluster from 'node:cluster';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import { AuditFileInUseError, startBroker } from '../../broker/broker.js';
import { WorkerChannel } from '../../broker/cluster/channel.js';
import { startPrimary, WorkerStartError, type FailedMessage } from '../../broker/cluster/primary.js';
import { openPrimaryParts } from '../../broker/cluster/open-primary-parts.js';
import { workerConfig, workerIdentity } from '../../broker/cluster/worker-config.js';
import { createLogger, effectiveLogLevel } from '../../broker/log.js';
import { checkConfig } from '../../broker/ops/check-config.js';
import { LogLevelError } from '../../broker/log.js';
import { assertThreadPoolFits, threadPoolSize, verifyThreadsProblem, type BrokerConfig } from '../../broker/config.js';
import { CodedError } from '../../lib/coded-error.js';
import { SharedKeyError } from '../../broker/keys/key-source.js';
import { openDevPki } from '../../vsock-shim/simulator/pki-store.js';
import { devPkiDirectory } from './get.js';
import { parseCommand } from '../args.js';
import { UsageError, listenProblem } from '../errors.js';
import { STORE_OPTIONS, STORE_USAGE, storeConfig, ensureDevAdminKey } from '../context.js';
import type { CliIo } from '../io.js';

export const BROKER_USAGE = `Usage: keygate broker [--config FILE] [--listen HOST:PORT] [--workers N] [--verify-threads N] [--store DIR --state DIR] [--dev] [--check-config]

Runs the secrets broker until SIGINT or SIGTERM. With --dev it also trusts
the NSM simulator's development root (shared with \`keygate get --dev\`).

  --listen HOST:PORT default 127.0.0.1:8443; plain HTTP only on loopback,
                     otherwise set tls.cert and tls.key in the config
  --workers N        worker processes serving the one port (default 1: the
                     broker in this process; --workers 0 = the available cores).
                     With N > 1 each worker writes its own audit chain
                     (audit.w<i>.jsonl), nonces and quarantine are shared,
                     rate limits are divided by N per worker, and the admin
                     API and the gateway are served by worker 1
  --verify-threads N attestation signature checks on libuv's thread pool, at
                     most N at once, the rest on the event loop (0: all on
                     the event loop; overrides the config's verifyThreads;
                     default: the cores - 1); N < UV_THREADPOOL_SIZE
                     (default 4)
  --check-config     print the effective configuration and what the broker
                     would trust (roots with SHA-256 fingerprints, admin keys,
                     approvals required) as JSON, and exit without starting
${STORE_USAGE}
`;

/** `keygate broker`: serve until a signal arrives. */
export async function brokerCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(argv, { ...STORE_OPTIONS, listen: { type: 'string' }, workers: { type: 'string' }, 'verify-threads': { type: 'string' }, 'check-config': { type: 'boolean' } });
  if (values.help) {
    io.out(BROKER_USAGE);
    return 0;
  }
  // --dev counts approvals by the development admin key (created here, beside the dev PKI, if missing).
  if (values.dev && !(values.config === undefined && process.env.KEYGATE_CONFIG)) await ensureDevAdminKey();
  let config = await storeConfig(values);
  if (values['verify-threads'] !== undefined) config = { ...config, verifyThreads: verifyThreadsFlag(values['verify-threads']) };
  // Against this process's thread pool: the broker's environment (--check-config runs in it too, e.g. ExecStartPre).
  assertThreadPoolFits(config.verifyThreads);
  if (config.dev) {
    // --dev is the explicit opt-in to trust the NSM simulator's development root.
    const pki = await openDevPki(devPkiDirectory());
    config = { ...config, extraRootPems: [...(config.extraRootPems ?? []), pki.root.pem] };
  }
  if (values['check-config']) {
    let checked;
    try {
      checked = await checkConfig(config);
    } catch (err) {
      // What would stop the broker at start (an unreadable root or key file) is reported, naming it.
      throw new UsageError(`--check-config: ${(err as Error).message}`, { hint: false });
    }
    io.out(`${JSON.stringify(checked, null, 2)}\n`);
    return 0;
  }
  const workers = workerCount(values.workers);
  const self = cluster.isWorker ? workerIdentity() : undefined;
  if (self) return runWorker(config, self, io);
  if (workers > 1) return runPrimary(config, workers, ['broker', ...argv], io);
  let broker;
  try {
    broker = await startBroker(config);
  } catch (err) {
    const listenError = listenProblem(err);
    if (listenError) throw new UsageError(`--listen ${config.listen}: ${listenError}`, { hint: false });
    if (err instanceof LogLevelError) throw new UsageError(err.message, { hint: false });
    if (!(err instanceof AuditFileInUseError || err instanceof SharedKeyError)) throw err;
    io.err(`keygate broker: refusing to start: ${err instanceof SharedKeyError ? `${err.code}: ` : ''}${err.message}\n`);
    return 1;
  }
  io.out(`keygate broker listening on ${broker.url}${config.dev ? ' (DEVELOPMENT MODE)' : ''}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await broker.close();
  return 0;
}

/** The keygate launcher (bin/keygate.js) the workers run: beside this module's package, from source or from dist/. */
function keygateBin(): string {
  const candidates = ['../../bin/keygate.js', '../../../bin/keygate.js'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  return candidates.find((file) => existsSync(file)) ?? candidates[0]!;
}

/**
 * `--workers N`: a whole number from 1 to 64, or 0 for the cores available to this process; absent: 1. Not the
 * cores by default: on the 2-core bench machine (shared, load generator beside) two workers cost ~1.2x the CPU per
 * release of one in steady state (every process warmed; the ~1.4x measured before was half-warmed JITs) and serve
 * about as many releases/s. It is not the cluster's: two separate single-process brokers cost ~1.2x too (a process
 * kept half as busy pays more per request: one broker at 8 concurrent costs ~1.2x what it does at 16); the primary's
 * share (nonce and quarantine answers) is ~50-75 µs per release. `npm run bench -- workers` measures all three.
 */
function workerCount(value: string | undefined): number {
  if (value === undefined) return 1;
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n > 64) throw new UsageError('--workers N: a whole number from 1 to 64, or 0 for the available cores');
  if (n === 0) return Math.min(64, availableParallelism());
  return n;
}

/** `--verify-threads N`: a whole number the config's verifyThreads accepts. */
function verifyThreadsFlag(value: string): number {
  const n = /^[0-9]{1,3}$/.test(value) ? Number(value) : Number.NaN;
  const problem = verifyThreadsProblem(n, threadPoolSize());
  if (problem) throw new UsageError(`--verify-threads ${value}: ${problem}`);
  return n;
}

/** The primary of `--workers N`: forks the workers, prints the URL once all listen, stops them all on SIGINT/SIGTERM. */
async function runPrimary(config: BrokerConfig, workers: number, args: readonly string[], io: CliIo): Promise<number> {
  let primary;
  try {
    primary = await startPrimary(config, { workers, exec: keygateBin(), args, log: createLogger({ level: effectiveLogLevel(config.logLevel) }) });
  } catch (err) {
    if (err instanceof LogLevelError) throw new UsageError(err.message, { hint: false });
    if (err instanceof WorkerStartError && err.kind !== 'refused') throw new UsageError(err.message, { hint: false });
    if (err instanceof SharedKeyError) {
      io.err(`keygate broker: refusing to start: ${err.code}: ${err.message}\n`);
      return 1;
    }
    io.err(`keygate broker: refusing to start: ${(err as Error).message}\n`);
    return 1;
  }
  io.out(`keygate broker listening on ${primary.ready.url} (${workers} workers)${config.dev ? ' (DEVELOPMENT MODE)' : ''}\n`);
  const signalled = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  const code = await Promise.race([primary.done, signalled.then(() => primary.stop())]);
  return code;
}

/** One worker of `--workers N`: the broker with worker i's config, the primary's nonces and quarantine; stops on SIGTERM or when the primary goes. */
async function runWorker(config: BrokerConfig, self: { i: number; n: number }, io: CliIo): Promise<number> {
  const channel = new WorkerChannel(process);
  let broker;
  try {
    broker = await startBroker(workerConfig(config, self.i, self.n), { viaPrimary: openPrimaryParts(channel) });
  } catch (err) {
    // Told to the primary, which says it once, in the words of a single-process broker (the same exit codes).
    const listenError = listenProblem(err);
    const failed: FailedMessage = listenError
      ? { kg: 'failed', kind: 'listen', message: `--listen ${config.listen}: ${listenError}` }
      : err instanceof LogLevelError
        ? { kg: 'failed', kind: 'usage', message: err.message }
        : { kg: 'failed', kind: 'refused', message: `${err instanceof SharedKeyError ? `${err.code}: ` : ''}${(err as Error).message}` };
    if (!(err instanceof CodedError) && !listenError) io.err(`keygate broker worker ${self.i}: ${(err as Error).stack ?? String(err)}\n`);
    await new Promise<void>((resolve) => process.send!(failed, undefined, undefined, () => resolve()));
    process.disconnect();
    return 1;
  }
  process.send!({ kg: 'ready', url: broker.url, ...(broker.adminUrl ? { adminUrl: broker.adminUrl } : {}), ...(broker.gatewayUrl ? { gatewayUrl: broker.gatewayUrl } : {}) });
  await new Promise<void>((resolve) => {
    // Ctrl-C reaches the whole process group: the primary decides, and sends SIGTERM.
    process.on('SIGINT', () => {});
    process.once('SIGTERM', () => resolve());
    // The primary is gone (killed): nobody answers nonce or quarantine questions any more, so stop serving.
    process.once('disconnect', () => resolve());
  });
  channel.close();
  await broker.close();
  if (process.connected) process.disconnect();
  return 0;
}
