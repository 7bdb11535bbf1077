import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, type StoreFlags } from '../context.js';
import { UsageError } from '../errors.js';
import { unrevokeIdentities, unrevokeSecret } from '../../broker/ops/unrevoke.js';
import { storeLabel } from '../../broker/store/open-store.js';
import { coded, withStore } from '../store-ops.js';
import type { CliIo } from '../io.js';
import { ADMIN_CLIENT_OPTIONS, ADMIN_CLIENT_USAGE, adminCall, type AdminClientFlags } from '../admin-client.js';

export const UNREVOKE_USAGE = `Usage: keygate unrevoke <secret> | --pcr0 H | --instance i-... | --baseline NAME [store options]

Undoes \`keygate revoke\`: a revoked secret is released again (same value and
version), or PCR0 values, instances or baselines (each flag repeatable) are
taken off the revocation list. One atomic store update; takes effect on the
next request of every broker replica. Anything named that is not revoked
refuses the whole command (NOT_REVOKED) and nothing is changed.
${STORE_USAGE}
${ADMIN_CLIENT_USAGE}
`;

/** `keygate unrevoke` */
export async function unrevokeCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    { ...STORE_OPTIONS, ...ADMIN_CLIENT_OPTIONS, pcr0: { type: 'string', multiple: true }, instance: { type: 'string', multiple: true }, baseline: { type: 'string', multiple: true } },
    1,
  );
  if (values.help) {
    io.out(UNREVOKE_USAGE);
    return 0;
  }
  const identities = { pcr0: values.pcr0 ?? [], instances: values.instance ?? [], baselines: values.baseline ?? [] };
  const anyIdentity = identities.pcr0.length + identities.instances.length + identities.baselines.length > 0;
  if ((positionals.length > 0) === anyIdentity) throw new UsageError(`give one secret name, or --pcr0/--instance/--baseline\n\n${UNREVOKE_USAGE}`);
  if (values['broker-admin']) {
    if (positionals.length) await adminCall(values as AdminClientFlags, 'revocations:write', 'POST', `/v1/admin/secrets/${encodeURIComponent(positionals[0]!)}/unrevoke`);
    else await adminCall(values as AdminClientFlags, 'revocations:write', 'POST', '/v1/admin/revocations/remove', identities);
    io.out(`${positionals.length ? `unrevoked secret ${positionals[0]}` : 'unrevoked the named identities'}\nvia: ${values['broker-admin']}\n`);
    return 0;
  }
  try {
    return await withStore(values as StoreFlags, async ({ config, store }) => {
      const where = storeLabel(config.store);
      if (positionals.length) {
        const b = await unrevokeSecret(store, positionals[0]!);
        io.out(`unrevoked secret ${b.secret} (version ${b.version}) in ${where}\n`);
      } else {
        const r = await unrevokeIdentities(store, identities);
        io.out(`unrevoked in ${where}: ${r.pcr0.length} PCR0 value(s), ${r.instances.length} instance(s), ${r.baselines.length} baseline(s) still revoked\n`);
      }
      return 0;
    });
  } catch (err) {
    throw coded(err);
  }
}
