import { access } from 'node:fs/promises';
import type { BrokerConfig } from '../../broker/config.js';
import type { BindingStore } from '../../broker/store/store.js';
import { allowRuleFrom, baselinePath } from '../../broker/ops/baselines.js';
import { addAllowRule, approvalStatus } from '../../broker/ops/stored-baselines.js';
import { pcr3OfRole, resolveRule, type BaselineSource } from '../../broker/ops/bind-rules.js';
import { OperationError } from '../../broker/ops/errors.js';
import { storeLabel } from '../../broker/store/open-store.js';
import type { PcrValues } from '../../lib/pcrs.js';
import { UsageError, usageError } from '../errors.js';
import { approvalWarning, configuredAdminKeys } from '../store-ops.js';
import type { CliIo } from '../io.js';

/**
 * `keygate bind --baseline`: where the rule's PCRs come from (a baseline or nitro-cli file, else the
 * baseline stored under that name), the PCRs a rule may add to a build's (PCR3: the IAM role, PCR4:
 * the instance), the warning when brokers would not honour the baseline yet, and the policy-only bind
 * (no value: a rule added to an existing binding, value and version untouched).
 */

export { resolveRule, type BaselineSource };

/** `--baseline ARG`: a file when one is there (or ARG is a path), else the store's baseline of that name. */
export async function baselineSource(arg: string, dir: string | undefined): Promise<BaselineSource> {
  const path = baselinePath(arg, dir);
  const isPath = arg.includes('/') || arg.endsWith('.json');
  if (!isPath && !(await access(path).then(() => true, () => false))) return { stored: arg };
  return allowRuleFrom(path).catch((err: unknown) => {
    const flagged = (m: string): string => `--baseline: ${m}`;
    throw usageError(err, { INPUT_UNREADABLE: flagged, INPUT_INVALID: flagged });
  });
}

/** PCR3 from `--iam-role ARN` (or `--pcr3`), PCR4 from `--pcr4`: what a rule adds to a build's measurements. */
export function rolePcrs(values: { 'iam-role'?: string; pcr3?: string; pcr4?: string }): PcrValues<3 | 4> {
  const role = values['iam-role'];
  if (role !== undefined) {
    if (values.pcr3 !== undefined) throw new UsageError('give --iam-role ARN or --pcr3 H, not both');
  }
  const pcr3 = role !== undefined ? roleFlag(role) : values.pcr3;
  return { ...(pcr3 !== undefined ? { 3: pcr3 } : {}), ...(values.pcr4 !== undefined ? { 4: values.pcr4 } : {}) };
}

/** `--iam-role ARN` as PCR3 (the check the admin API makes too, in the flag's words). */
function roleFlag(role: string): string {
  try {
    return pcr3OfRole(role);
  } catch (err) {
    throw err instanceof OperationError ? new UsageError(`--iam-role: ${err.message}`) : err;
  }
}

/** Warns (stderr) when brokers with this configuration would deny the rule's baseline (BASELINE_NOT_APPROVED). */
export async function warnUnapproved(io: CliIo, config: BrokerConfig, store: BindingStore, name: string | undefined): Promise<void> {
  if (name === undefined) return;
  const stored = (await store.refresh()).baselines.get(name);
  if (!stored) return;
  const warning = approvalWarning(name, await approvalStatus(stored, await configuredAdminKeys(config), config.approvalsRequired));
  if (warning) io.err(`keygate bind: warning: ${warning}\n`);
}

/** The policy-only bind: adds the rule to the existing binding (one store update), prints what happened. */
export async function addRule(io: CliIo, config: BrokerConfig, store: BindingStore, secret: string, source: BaselineSource, extra: PcrValues<3 | 4>): Promise<number> {
  const { rule, baseline } = resolveRule(source, store.snapshot(), extra);
  const result = await addAllowRule(store, secret, rule, baseline, new Date());
  const b = result.binding;
  const where = storeLabel(config.store);
  io.out(
    result.added
      ? `added a measurement set${rule.baseline ? ` (baseline ${rule.baseline})` : ''} to ${secret} in ${where}: version ${b.version} unchanged (the value is untouched), ${b.allow.length} allowed measurement sets\n`
      : `${secret} in ${where} already allows these measurements${rule.baseline ? ` (baseline ${rule.baseline})` : ''}; ${baseline ? 'baseline approvals merged into the store' : 'nothing changed'}\n`,
  );
  await warnUnapproved(io, config, store, rule.baseline);
  return 0;
}
