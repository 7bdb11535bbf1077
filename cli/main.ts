import { UsageError, usageError } from './errors.js';
import { processIo, type CliIo } from './io.js';

const USAGE = `keygate: attestation-gated secrets for AWS Nitro Enclaves

Usage: keygate <command> [options]

Commands:
  demo              run the whole flow locally (development defaults)
  verify <file|->   verify an attestation document
  broker            run the secrets broker
  bind <secret>     bind a secret to the measurements allowed to read it
  rotate <secret>   store a new value for a secret (version + 1)
  unbind <secret>   remove a binding
  list              list bindings (never values)
  revoke            revoke a secret, or a PCR0 / instance / baseline / delegation everywhere
  delegations list  list the delegations brokers issued (uses, expiry, revoked)
  unrevoke          undo a revocation (same arguments as revoke)
  audit verify FILE check the audit log's chain and signatures
  store init        create the configured store (DynamoDB table) if missing
  store copy        copy a file store into the configured (DynamoDB) store
  forward           parent-side relay from the enclave to allow-listed hosts
  get <secret>      fetch a secret as an enclave application does (or --dev)
  describe-eif FILE measure an Enclave Image File (PCR0/1/2/8)
  record            record a build's PCRs as a baseline, or --check a rebuild
  baseline put|list store a recorded baseline; list stored baselines and approvals
  approve NAME      add an admin approval to a baseline (in the store and its file)
  approvals         list, grant or deny release requests of secrets bound with --approval
  admin token       mint a short-lived token for the broker's admin API
  keygen            create an Ed25519 key for signing or approving baselines
  dev pcrs          print the NSM simulator's PCRs (for bind --dev --dev-pcrs)
  version           print the version (also -v, --version)

Run "keygate <command> --help" for a command's options.
`;

type Command = (argv: readonly string[], io: CliIo, now: () => number) => Promise<number>;

/**
 * Each command's module is loaded when it runs, not before: `keygate verify`
 * or `list` does not load hono (the broker's HTTP server) or the AWS SDK.
 */
const COMMANDS: Record<string, () => Promise<Command>> = {
  verify: async () => (await import('./commands/verify.js')).verifyCommand,
  broker: async () => (await import('./commands/broker.js')).brokerCommand,
  bind: async () => (await import('./commands/secrets.js')).bindCommand,
  rotate: async () => (await import('./commands/secrets.js')).rotateCommand,
  unbind: async () => (await import('./commands/secrets.js')).unbindCommand,
  list: async () => (await import('./commands/list.js')).listCommand,
  revoke: async () => (await import('./commands/secrets.js')).revokeCommand,
  delegations: async () => (await import('./commands/delegations.js')).delegationsCommand,
  unrevoke: async () => (await import('./commands/unrevoke.js')).unrevokeCommand,
  baseline: async () => (await import('./commands/baseline.js')).baselineCommand,
  audit: async () => (await import('./commands/audit.js')).auditCommand,
  store: async () => (await import('./commands/store.js')).storeCommand,
  demo: async () => (await import('./commands/demo.js')).demoCommand,
  forward: async () => (await import('./commands/forward.js')).forwardCommand,
  get: async () => (await import('./commands/get.js')).getCommand,
  'describe-eif': async () => (await import('./commands/eif.js')).describeEifCommand,
  record: async () => (await import('./commands/record.js')).recordCommand,
  approve: async () => (await import('./commands/record.js')).approveCommand,
  approvals: async () => (await import('./commands/approvals.js')).approvalsCommand,
  keygen: async () => (await import('./commands/record.js')).keygenCommand,
  admin: async () => (await import('./commands/admin.js')).adminCommand,
  dev: async () => (await import('./commands/dev.js')).devCommand,
};

/**
 * With --json, a command's failure is one JSON object on stdout too (stderr keeps the message):
 * `verify` answers in its own invalid-document shape, every other command as `{ error: { code, message } }`.
 */
function jsonFailure(name: string, argv: readonly string[], code: string, message: string): string | undefined {
  const end = argv.indexOf('--');
  if (!(end < 0 ? argv : argv.slice(0, end)).includes('--json')) return undefined;
  return `${JSON.stringify(name === 'verify' ? { valid: false, code, message } : { error: { code, message } })}\n`;
}

/**
 * Runs the CLI and returns the exit status. Never throws: every failure is
 * reported as a message (no stack traces) with status 2.
 */
export async function main(argv: readonly string[], io: CliIo = processIo(), now: () => number = Date.now): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.out(USAGE);
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    io.out('keygate 0.1.0\n');
    return 0;
  }
  // Own keys only: "toString" is not a command.
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!load) {
    io.err(`keygate: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  try {
    return await (await load())(rest, io, now);
  } catch (thrown) {
    // An operation's refusal without a command-specific wording is a usage error all the same.
    const err = usageError(thrown);
    if (err instanceof UsageError) {
      const json = jsonFailure(name, rest, err.code, err.message);
      if (json) io.out(json);
      io.err(`keygate ${name}: ${err.message}\n${err.hint ? `(run "keygate ${name} --help" for usage)\n` : ''}`);
      return 2;
    }
    const message = err instanceof Error ? err.message : String(err);
    const json = jsonFailure(name, rest, 'INTERNAL', message);
    if (json) io.out(json);
    io.err(`keygate ${name}: internal error: ${message}\n`);
    return 2;
  }
}
