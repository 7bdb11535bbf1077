import { UsageError } from './errors.js';
import { processIo, type CliIo } from './io.js';
import { verifyCommand } from './commands/verify.js';
import { brokerCommand } from './commands/broker.js';
import { bindCommand, revokeCommand, rotateCommand, unbindCommand } from './commands/secrets.js';
import { listCommand } from './commands/list.js';
import { auditCommand } from './commands/audit.js';
import { demoCommand } from './commands/demo.js';
import { forwardCommand } from './commands/forward.js';
import { getCommand } from './commands/get.js';
import { describeEifCommand } from './commands/eif.js';
import { approveCommand, keygenCommand, recordCommand } from './commands/record.js';

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
  revoke            revoke a secret, or a PCR0 / instance / baseline everywhere
  audit verify FILE check the audit log's chain and signatures
  forward           parent-side relay from the enclave to allow-listed hosts
  get <secret>      fetch a secret as an enclave application does (or --dev)
  describe-eif FILE measure an Enclave Image File (PCR0/1/2/8)
  record            record a build's PCRs as a baseline, or --check a rebuild
  approve NAME      add an admin approval to a baseline
  keygen            create an Ed25519 key for signing or approving baselines

Run "keygate <command> --help" for a command's options.
`;

type Command = (argv: readonly string[], io: CliIo, now: () => number) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  verify: verifyCommand,
  broker: brokerCommand,
  bind: bindCommand,
  rotate: rotateCommand,
  unbind: unbindCommand,
  list: listCommand,
  revoke: revokeCommand,
  audit: auditCommand,
  demo: demoCommand,
  forward: forwardCommand,
  get: getCommand,
  'describe-eif': describeEifCommand,
  record: recordCommand,
  approve: approveCommand,
  keygen: keygenCommand,
};

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
  if (name === '--version') {
    io.out('keygate 0.1.0\n');
    return 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    io.err(`keygate: unknown command "${name}"\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command(rest, io, now);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`keygate ${name}: ${err.message}\n${err.hint ? `(run "keygate ${name} --help" for usage)\n` : ''}`);
      return 2;
    }
    io.err(`keygate ${name}: internal error: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
}
