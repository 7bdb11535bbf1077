import { stat } from 'node:fs/promises';
import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, brokerConfig, storeConfig } from '../context.js';
import { UsageError } from '../errors.js';
import { CodedError } from '../../lib/coded-error.js';
import { initSharedState } from '../../broker/state.js';
import { openStore, storeLabel } from '../../broker/store/open-store.js';
import type { BindingStore } from '../../broker/store/store.js';
import { copyStore, StoreCopyError, type CopiedItem } from '../../broker/ops/store-copy.js';
import type { CliIo } from '../io.js';

export const STORE_COMMAND_USAGE = `Usage: keygate store init [store options]
       keygate store copy --from FILE_STORE_DIR --to-config CONFIG [--dry-run] [--json] [--allow-local]

init: creates what the configured store needs, idempotently: for a DynamoDB store
the table (on-demand billing, TTL enabled, point-in-time recovery requested);
for a file store its directory; and the shared nonce table when \`nonces\` is
on DynamoDB (TTL enabled). Reports each step; running it again changes
nothing that exists. Region, endpoint and credentials come from the config's
store settings or the usual AWS SDK environment (AWS_REGION, AWS_ENDPOINT_URL, ...).
${STORE_USAGE}

copy: copies an embedded file store into the store CONFIG names (DynamoDB):
bindings as stored (ciphertext, never decrypted; versions kept), baselines
with their approvals, the revocation list, and the versions reserved for
unbound names (so versions never repeat). Idempotent: what the destination
already holds unchanged is skipped. An item the destination holds with other
content is a conflict: nothing is copied, exit 1. A source entry failing
validation (or not a regular file): nothing is copied, exit 1. An item too
large for the destination (a DynamoDB item holds 400 KB): nothing is copied,
exit 1. If the destination fails part-way, what was written is reported
(STORE_COPY_INTERRUPTED, exit 1) and running the copy again completes it.
Reports names and versions, never values.
  --from DIR         the file store directory to copy from
  --to-config FILE   broker config whose store receives the copy
  --dry-run          report what would be copied; write nothing
  --json             the report as JSON
  --allow-local      copy bindings of the local key provider too (replicas cannot
                     decrypt them: brokers on a shared store deny them until they
                     are re-bound with --provider aws-kms); refused without it
`;

const COPY_OPTIONS = { from: { type: 'string' }, 'to-config': { type: 'string' }, 'dry-run': { type: 'boolean' }, json: { type: 'boolean' }, 'allow-local': { type: 'boolean' } } as const;

function line(item: CopiedItem): string {
  switch (item.kind) {
    case 'binding':
      return `binding ${item.name} version ${item.version} (${item.provider})`;
    case 'baseline':
      return `baseline ${item.name} (${item.approvals} approval${item.approvals === 1 ? '' : 's'})`;
    case 'revocations':
      return `revocations (${item.pcr0} PCR0, ${item.instances} instance(s), ${item.baselines} baseline(s))`;
    case 'reserved-version':
      return `reserved version ${item.name} up to ${item.version}`;
  }
}

/** `keygate store copy` */
async function storeCopy(values: { from?: string; 'to-config'?: string; 'dry-run'?: boolean; json?: boolean; 'allow-local'?: boolean }, io: CliIo): Promise<number> {
  if (!values.from || !values['to-config']) throw new UsageError('expected: keygate store copy --from FILE_STORE_DIR --to-config CONFIG');
  // Opening a file store creates its directory: a mistyped --from must not read as an empty store.
  const from = await stat(values.from).catch(() => undefined);
  if (!from?.isDirectory()) throw new UsageError(`--from ${values.from}: not a directory (the file store to copy)`);
  const config = await brokerConfig({ config: values['to-config'] });
  const stores: BindingStore[] = [];
  try {
    // The source is opened as a file store whatever the config says: it is the embedded store being moved.
    const source = await openStore({ store: values.from });
    stores.push(source);
    const dest = await openStore(config);
    stores.push(dest);
    const report = await copyStore(source, dest, { dryRun: Boolean(values['dry-run']), allowLocal: Boolean(values['allow-local']), destinationShared: typeof config.store !== 'string' });
    const to = storeLabel(config.store);
    for (const w of report.warnings) io.err(`keygate store copy: warning: ${w}\n`);
    if (values.json) {
      io.out(`${JSON.stringify({ from: values.from, to, dryRun: report.dryRun, copied: report.copied, unchanged: report.unchanged, warnings: report.warnings })}\n`);
      return 0;
    }
    const verb = report.dryRun ? 'would copy' : 'copied';
    if (report.copied.length === 0) io.out(`nothing to copy: ${to} already holds everything in ${values.from} (${report.unchanged.length} item(s) unchanged)\n`);
    else {
      for (const item of report.copied) io.out(`${verb} ${line(item)}\n`);
      io.out(`${verb} ${report.copied.length} item(s) from ${values.from} to ${to}; ${report.unchanged.length} already there\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof StoreCopyError) {
      if (values.json) io.out(`${JSON.stringify({ error: { code: err.code, message: err.message }, conflicts: err.conflicts, copied: err.copied })}\n`);
      else for (const item of err.copied) io.out(`copied ${line(item)}\n`);
      io.err(`keygate store copy: ${err.code}: ${err.message}\n`);
      return 1;
    }
    // The destination or source could not be opened or read (a missing table, DynamoDB unreachable, a
    // mismatched table): a refusal with its code, nothing copied; never an "internal error".
    if (!(err instanceof CodedError) || err instanceof UsageError) throw err;
    if (values.json) io.out(`${JSON.stringify({ error: { code: err.code, message: err.message }, conflicts: [], copied: [] })}\n`);
    io.err(`keygate store copy: ${err.code}: ${err.message}; nothing was copied\n`);
    return 1;
  } finally {
    for (const store of stores) store.close();
  }
}

/** `keygate store init|copy` */
export async function storeCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(argv, { ...STORE_OPTIONS, ...COPY_OPTIONS }, 1);
  if (values.help) {
    io.out(STORE_COMMAND_USAGE);
    return 0;
  }
  if (positionals[0] === 'copy') {
    if (values.config || values.store || values.state || values.dev) throw new UsageError('store copy takes --from DIR and --to-config FILE (not --config/--store/--state/--dev)');
    return storeCopy(values, io);
  }
  if (positionals[0] !== 'init') throw new UsageError('expected: keygate store init [--config FILE] or keygate store copy --from DIR --to-config FILE');
  if (values.from || values['to-config'] || values['dry-run'] || values.json || values['allow-local']) throw new UsageError('--from, --to-config, --dry-run, --json and --allow-local belong to keygate store copy');
  const config = await storeConfig(values);
  try {
    for (const line of await initSharedState(config)) io.out(`${line}\n`);
  } catch (err) {
    // A table or bucket that exists but is weaker than what init creates, or AWS refusing: a coded refusal.
    if (!(err instanceof CodedError) || err instanceof UsageError) throw err;
    io.err(`keygate store init: ${err.code}: ${err.message}\n`);
    return 1;
  }
  return 0;
}
