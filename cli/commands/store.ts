import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, brokerConfig } from '../context.js';
import { UsageError } from '../errors.js';
import { initSharedState } from '../../broker/state.js';
import type { CliIo } from '../io.js';

export const STORE_COMMAND_USAGE = `Usage: keygate store init [store options]

Creates what the configured store needs, idempotently: for a DynamoDB store
the table (on-demand billing, TTL enabled, point-in-time recovery requested);
for a file store its directory; and the shared nonce table when \`nonces\` is
on DynamoDB (TTL enabled). Reports each step; running it again changes
nothing that exists. Region, endpoint and credentials come from the config's
store settings or the usual AWS SDK environment (AWS_REGION, AWS_ENDPOINT_URL, ...).
${STORE_USAGE}
`;

/** `keygate store init` */
export async function storeCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(argv, STORE_OPTIONS, 1);
  if (values.help) {
    io.out(STORE_COMMAND_USAGE);
    return 0;
  }
  if (positionals[0] !== 'init') throw new UsageError('expected: keygate store init [--config FILE]');
  const config = await brokerConfig(values);
  for (const line of await initSharedState(config)) io.out(`${line}\n`);
  return 0;
}
