import { AuditFileInUseError, startBroker } from '../../broker/broker.js';
import { checkConfig } from '../../broker/ops/check-config.js';
import { LogLevelError } from '../../broker/log.js';
import { SharedKeyError } from '../../broker/keys/key-source.js';
import { openDevPki } from '../../vsock-shim/simulator/pki-store.js';
import { devPkiDirectory } from './get.js';
import { parseCommand } from '../args.js';
import { UsageError, listenProblem } from '../errors.js';
import { STORE_OPTIONS, STORE_USAGE, storeConfig, ensureDevAdminKey } from '../context.js';
import type { CliIo } from '../io.js';

export const BROKER_USAGE = `Usage: keygate broker [--config FILE] [--listen HOST:PORT] [--store DIR --state DIR] [--dev] [--check-config]

Runs the secrets broker until SIGINT or SIGTERM. With --dev it also trusts
the NSM simulator's development root (shared with \`keygate get --dev\`).

  --listen HOST:PORT default 127.0.0.1:8443; plain HTTP only on loopback,
                     otherwise set tls.cert and tls.key in the config
  --check-config     print the effective configuration and what the broker
                     would trust (roots with SHA-256 fingerprints, admin keys,
                     approvals required) as JSON, and exit without starting
${STORE_USAGE}
`;

/** `keygate broker`: serve until a signal arrives. */
export async function brokerCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(argv, { ...STORE_OPTIONS, listen: { type: 'string' }, 'check-config': { type: 'boolean' } });
  if (values.help) {
    io.out(BROKER_USAGE);
    return 0;
  }
  // --dev counts approvals by the development admin key (created here, beside the dev PKI, if missing).
  if (values.dev && !(values.config === undefined && process.env.KEYGATE_CONFIG)) await ensureDevAdminKey();
  let config = await storeConfig(values);
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
