import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, type StoreFlags } from '../context.js';
import { UsageError } from '../errors.js';
import { readBaseline } from '../../broker/ops/baselines.js';
import { approvalStatus, listBaselines, putStoredBaseline, type BaselineRow } from '../../broker/ops/stored-baselines.js';
import { storeLabel } from '../../broker/store/open-store.js';
import { approvalSummary, approvalWarning, coded, configuredAdminKeys, withStore } from '../store-ops.js';
import type { CliIo } from '../io.js';
import { ADMIN_CLIENT_OPTIONS, ADMIN_CLIENT_USAGE, adminCall, type AdminClientFlags } from '../admin-client.js';

export const BASELINE_USAGE = `Usage: keygate baseline put FILE [--replace] [--json] [store options]
       keygate baseline list [--json] [store options]

put: stores a recorded baseline (what \`keygate record\` wrote, approvals
included) so bindings can name it and \`keygate approve\` can approve the
stored copy. Idempotent: the same build again only adds approvals the store
lacks. Another build under the same name is refused (BASELINE_CONFLICT):
baselines are history; --replace overwrites it (its approvals are dropped:
they sign the other build). Warns when the baseline lacks the approvals
brokers with this configuration require.
  --replace          replace another build stored under that name

list: stored baselines with their PCRs and valid approvals (counted against
the configured adminKeys and approvalsRequired), and whether brokers with
this configuration honour rules naming them.
  --json             as JSON
${STORE_USAGE}
${ADMIN_CLIENT_USAGE} (put: scope baselines:approve; list: secrets:read)
`;

/** `keygate baseline put|list` */
export async function baselineCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(argv, { ...STORE_OPTIONS, ...ADMIN_CLIENT_OPTIONS, replace: { type: 'boolean' }, json: { type: 'boolean' } }, 2);
  if (values.help) {
    io.out(BASELINE_USAGE);
    return 0;
  }
  const [action, file] = positionals;
  try {
    if (action === 'put') {
      if (!file || positionals.length !== 2) throw new UsageError('expected: keygate baseline put FILE');
      const recorded = await readBaseline(file);
      if (values['broker-admin']) {
        if (values.replace) throw new UsageError('--replace is not offered through --broker-admin: replace a build on the store directly');
        const answer = await adminCall(values as AdminClientFlags, 'baselines:approve', 'PUT', `/v1/admin/baselines/${encodeURIComponent(recorded.name)}`, recorded);
        if (values.json) io.out(`${JSON.stringify(answer)}\n`);
        else io.out(`${answer.changed ? 'stored' : 'unchanged:'} baseline ${recorded.name} (${String(answer.approvals)} approval(s))\nvia: ${values['broker-admin']}\n`);
        return 0;
      }
      return await withStore(values as StoreFlags, async ({ config, store }) => {
        const { baseline, changed } = await putStoredBaseline(store, recorded, { replace: Boolean(values.replace) });
        const status = await approvalStatus(baseline, await configuredAdminKeys(config), config.approvalsRequired);
        const where = storeLabel(config.store);
        const warning = approvalWarning(baseline.name, status);
        if (warning) io.err(`keygate baseline: warning: ${warning}\n`);
        if (values.json) io.out(`${JSON.stringify({ store: where, baseline: baseline.name, changed, approvals: baseline.approvals.length, ...status })}\n`);
        else io.out(`${changed ? 'stored' : 'unchanged:'} baseline ${baseline.name} in ${where} (${baseline.approvals.length} approval(s); ${approvalSummary(status)})\n`);
        return 0;
      });
    }
    if (action === 'list') {
      if (positionals.length !== 1 || values.replace) throw new UsageError('expected: keygate baseline list [--json]');
      if (values['broker-admin']) {
        const answer = (await adminCall(values as AdminClientFlags, 'secrets:read', 'GET', '/v1/admin/baselines')) as unknown as BaselineList;
        printList(io, `the broker at ${values['broker-admin']}`, answer, Boolean(values.json));
        return 0;
      }
      return await withStore(values as StoreFlags, async ({ config, store }) => {
        const keys = await configuredAdminKeys(config);
        const rows = await listBaselines(store.snapshot(), keys, config.approvalsRequired);
        printList(io, storeLabel(config.store), { adminKeys: keys.length, approvalsRequired: config.approvalsRequired, baselines: rows }, Boolean(values.json));
        return 0;
      });
    }
    throw new UsageError('expected: keygate baseline put FILE | keygate baseline list');
  } catch (err) {
    throw coded(err);
  }
}

/** What `baseline list` shows, from the store or from the admin API (GET /v1/admin/baselines): the same rows. */
interface BaselineList {
  readonly adminKeys: number;
  readonly approvalsRequired: number;
  readonly baselines: readonly BaselineRow[];
}

function printList(io: CliIo, where: string, list: BaselineList, json: boolean): void {
  if (json) {
    io.out(`${JSON.stringify({ store: where, ...list })}\n`);
    return;
  }
  io.out(`baselines in ${where} (${list.adminKeys} admin key(s) configured, ${list.approvalsRequired} approval(s) required)\n`);
  if (list.baselines.length === 0) io.out('no baselines\n');
  for (const r of list.baselines) {
    const state = r.revoked ? 'REVOKED' : r.approved ? 'approved' : 'NOT APPROVED';
    io.out(`${r.name}  ${state}  ${r.valid}/${r.required} valid approval(s)  PCR0=${r.pcrs['0'].slice(0, 16)}…${r.pcrs['8'] ? `  PCR8=${r.pcrs['8'].slice(0, 16)}…` : ''}  ${r.createdAt}  ${r.builder}\n`);
  }
}
