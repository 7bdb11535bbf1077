import { devPcrs } from '../../vsock-shim/simulator/nsm-simulator.js';
import { UsageError } from '../errors.js';
import { parseCommand } from '../args.js';
import type { CliIo } from '../io.js';

export const DEV_USAGE = `Usage: keygate dev pcrs [--json]

DEVELOPMENT ONLY. Prints the PCRs the NSM simulator reports (the enclave of
\`keygate get --dev\`): PCR0/1/2 are what \`keygate bind NAME --dev --dev-pcrs\`
binds to; PCR3 and PCR4 are the simulated role and instance.

  --json             {"pcrs":{"0":HEX,"1":HEX,"2":HEX,"3":HEX,"4":HEX}}
`;

/** The simulator's PCRs that `bind --dev --dev-pcrs` binds (the image measurements). */
export function devBindPcrs(): { 0: string; 1: string; 2: string } {
  const pcrs = devPcrs();
  return { 0: pcrs[0]!, 1: pcrs[1]!, 2: pcrs[2]! };
}

/** `keygate dev pcrs` */
export async function devCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(argv, { json: { type: 'boolean' } }, 1);
  if (values.help) {
    io.out(DEV_USAGE);
    return 0;
  }
  if (positionals[0] !== 'pcrs') throw new UsageError('expected: keygate dev pcrs [--json]');
  const pcrs = devPcrs();
  if (values.json) {
    io.out(`${JSON.stringify({ pcrs })}\n`);
    return 0;
  }
  for (const [index, value] of Object.entries(pcrs)) io.out(`PCR${index} ${value}\n`);
  return 0;
}
