import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, storeConfig, storeWhere, type StoreFlags } from '../context.js';
import { UsageError } from '../errors.js';
import { openDelegationRegistry } from '../../broker/delegation/open-delegations.js';
import { DELEGATION_ID, DelegationRegistryUnavailableError, type DelegationRecord } from '../../broker/delegation/registry.js';
import type { CliIo } from '../io.js';

export const DELEGATIONS_USAGE = `Usage: keygate delegations list [--json] [store options]

Lists the delegations brokers issued (id, the parent whose policy grants them,
names, expiry, uses taken of the maximum, revoked). Revoke one with
keygate revoke --delegation ID: it and every delegation derived from it stop
on the next request of every broker replica.
${STORE_USAGE}
`;

function state(d: DelegationRecord, nowSeconds: number): string {
  if (d.revoked) return 'REVOKED';
  if (d.exp <= nowSeconds) return 'expired';
  if (d.uses >= d.maxUses) return 'exhausted';
  return 'active';
}

/** `keygate delegations list` */
export async function delegationsCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values, positionals } = parseCommand(argv, { ...STORE_OPTIONS, json: { type: 'boolean' } }, 1);
  if (values.help || positionals.length === 0) {
    io.out(DELEGATIONS_USAGE);
    return values.help ? 0 : 2;
  }
  if (positionals[0] !== 'list') throw new UsageError(`unknown subcommand "${positionals[0]}"\n\n${DELEGATIONS_USAGE}`);
  const config = await storeConfig(values);
  const registry = await openDelegationRegistry(config.store);
  let records: DelegationRecord[];
  let invalid: string[];
  try {
    ({ records, invalid } = await registry.list());
    records.sort((a, b) => a.iat - b.iat || a.id.localeCompare(b.id));
    invalid.sort();
  } catch (err) {
    if (err instanceof DelegationRegistryUnavailableError) throw new UsageError(err.message);
    throw err;
  } finally {
    registry.close();
  }
  const nowSeconds = Math.floor(now() / 1000);
  // Like keygate list: a record failing validation is named (it is refused to every presenter) and the exit status is 1.
  const status = invalid.length ? 1 : 0;
  if (values.json) {
    io.out(`${JSON.stringify({ delegations: records.map((d) => ({ ...d, state: state(d, nowSeconds) })), invalid })}\n`);
    return status;
  }
  if (!records.length && !invalid.length) io.out('no delegations\n');
  for (const id of invalid) io.out(`${id}  INVALID: its record fails validation; refused to every presenter until fixed or removed\n`);
  for (const d of records) {
    io.out(`${d.id}  ${state(d, nowSeconds)}  depth ${d.depth}${d.from ? ` (from ${d.from})` : ''}  uses ${d.uses}/${d.maxUses}  expires ${new Date(d.exp * 1000).toISOString()}\n`);
    io.out(`    parent ${d.parent.moduleId} PCR0=${d.parent.pcr0.slice(0, 16)}…  names ${d.names.join(', ')}\n`);
  }
  return status;
}

/** `keygate revoke --delegation ID...`: marks each revoked (idempotent); an unknown id is an error. */
export async function revokeDelegations(ids: readonly string[], flags: StoreFlags, io: CliIo): Promise<number> {
  for (const id of ids) if (!DELEGATION_ID.test(id)) throw new UsageError(`--delegation ${JSON.stringify(id)} is not a delegation id (keygate delegations list shows them)`);
  const config = await storeConfig(flags);
  const registry = await openDelegationRegistry(config.store);
  try {
    for (const id of ids) {
      if (!(await registry.revoke(id))) throw new UsageError(`no delegation ${id} in this store (keygate delegations list shows them)`);
      io.out(`revoked delegation ${id} (and every delegation derived from it)\n`);
    }
  } catch (err) {
    if (err instanceof DelegationRegistryUnavailableError) throw new UsageError(err.message);
    throw err;
  } finally {
    registry.close();
  }
  io.out(`store: ${storeWhere(config)}\n`);
  return 0;
}
