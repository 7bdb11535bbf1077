import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, storeConfig } from '../context.js';
import { openAdminStore } from '../../broker/state.js';
import type { CliIo } from '../io.js';
import { ADMIN_CLIENT_OPTIONS, ADMIN_CLIENT_USAGE, adminCall, type AdminClientFlags } from '../admin-client.js';

export const LIST_USAGE = `Usage: keygate list [--json] [store options]

Lists bindings: names, versions, allowed measurement sets. Never values.
Exits 1 when a store file fails validation (each is named, with the field);
everything that loads is still listed.
${STORE_USAGE}
${ADMIN_CLIENT_USAGE}
`;

/** `keygate list` */
export async function listCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(argv, { ...STORE_OPTIONS, ...ADMIN_CLIENT_OPTIONS, json: { type: 'boolean' } });
  if (values.help) {
    io.out(LIST_USAGE);
    return 0;
  }
  if (values['broker-admin']) {
    // Through the admin API (scope secrets:read): the same rows, as the broker's store holds them.
    io.out(`${JSON.stringify(await adminCall(values as AdminClientFlags, 'secrets:read', 'GET', '/v1/admin/secrets'))}\n`);
    return 0;
  }
  const config = await storeConfig(values);
  const { store, problems } = await openAdminStore(config);
  const { bindings, revocations, invalidBindings, revocationsProblem } = store.snapshot();
  store.close(); // everything needed is in the snapshot
  // Everything except the ciphertext: names, versions and policy are not secret; values never leave the store.
  const rows = [...bindings.values()]
    .sort((a, b) => a.secret.localeCompare(b.secret))
    .map(({ ciphertext: _ciphertext, ...rest }) => rest);
  const status = problems.length ? 1 : 0;
  if (values.json) {
    // A revocation list that failed validation is unknown, not empty.
    io.out(`${JSON.stringify({ bindings: rows, invalidBindings: [...invalidBindings].sort(), revocations: revocationsProblem ? null : revocations, problems })}\n`);
    return status;
  }
  if (rows.length === 0 && invalidBindings.size === 0) io.out('no bindings\n');
  for (const name of [...invalidBindings].sort()) io.out(`${name}  INVALID: denied to every enclave until its file is fixed\n`);
  for (const b of rows) {
    const flags = [b.revoked ? 'REVOKED' : '', b.allowDebug ? 'allow-debug' : '', b.mode === 'kms-recipient' ? 'kms-recipient' : '', b.inject ? `inject ${b.inject.upstream}` : '', b.approval ? `approval ${b.approval.required} of ${b.approval.approvers.length} within ${b.approval.windowSeconds}s` : '', b.instances ? ('ids' in b.instances ? `instances ${b.instances.ids.join(',')}` : `instances tagged ${b.instances.ec2Tag.key}=${b.instances.ec2Tag.value}`) : ''].filter(Boolean);
    io.out(`${b.secret}  v${b.version}  ttl ${b.ttlSeconds}s  ${b.provider}${flags.length ? `  [${flags.join('; ')}]` : ''}\n`);
    for (const rule of b.allow) {
      const pcrs = Object.entries(rule.pcrs).map(([i, v]) => `PCR${i}=${v.slice(0, 16)}…`).join(' ');
      io.out(`    allow ${pcrs}${rule.baseline ? ` (baseline ${rule.baseline})` : ''}\n`);
    }
  }
  const revoked = revocations.pcr0.length + revocations.instances.length + revocations.baselines.length;
  if (revocationsProblem) io.out('revoked identities: UNKNOWN: revocations.json fails validation; brokers release nothing until it is fixed\n');
  else if (revoked) io.out(`revoked identities: ${revocations.pcr0.length} PCR0, ${revocations.instances.length} instance(s), ${revocations.baselines.length} baseline(s)\n`);
  for (const p of problems) io.err(`error: ${p}\n`);
  return status;
}
