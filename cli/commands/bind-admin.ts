import type { BaselineSource } from '../../broker/ops/bind-rules.js';
import type { ApprovalStatus } from '../../broker/ops/stored-baselines.js';
import type { PcrValues } from '../../lib/pcrs.js';
import { adminCall, type AdminClientFlags } from '../admin-client.js';
import { UsageError } from '../errors.js';
import type { CliIo } from '../io.js';
import { approvalWarning } from '../store-ops.js';

/**
 * `keygate bind ... --broker-admin URL`: the bind the flags describe, run by the broker's admin API
 * instead of on the store. The rule goes as the flags gave it (PCRs, a baseline name, an IAM role) and
 * the broker resolves it with the resolver the store path uses (broker/ops/bind-rules.ts), so both
 * refuse the same things with the same codes.
 */

/** What the flags say the allowed measurement set is. */
export interface RuleFlags {
  /** --pcr0/1/2/8 (or the simulator's with --dev-pcrs); empty with --baseline. */
  readonly image: PcrValues;
  /** --baseline: a file's rule (and baseline), or a stored baseline's name. */
  readonly source?: BaselineSource;
  /** --iam-role ARN (PCR3; the broker checks and measures it). */
  readonly iamRole?: string;
  /** --pcr3 (when not --iam-role) and --pcr4. */
  readonly pcr3?: string;
  readonly pcr4?: string;
}

/** The bind settings that come with a value (absent: a rule added to an existing binding). */
export interface BindBody {
  readonly value: Uint8Array;
  readonly provider: string;
  readonly kmsKeyId?: string;
  readonly recipient: boolean;
  readonly ttlSeconds?: number;
  readonly allowDebug: boolean;
  readonly instances: readonly string[];
  readonly instanceTag?: { key: string; value: string };
  readonly add: boolean;
}

/** The rule as the admin API takes it; a baseline file is stored first (scope baselines:approve), then named. */
async function ruleSpec(flags: AdminClientFlags, rule: RuleFlags): Promise<Record<string, unknown>> {
  const extra = { ...(rule.pcr3 !== undefined ? { 3: rule.pcr3 } : {}), ...(rule.pcr4 !== undefined ? { 4: rule.pcr4 } : {}) };
  const role = rule.iamRole !== undefined ? { iamRole: rule.iamRole } : {};
  const source = rule.source;
  if (source && 'stored' in source) return { baseline: source.stored, pcrs: extra, ...role };
  if (source?.baseline) {
    // Two calls (the baseline, then the rule naming it): a single-use --token can make only one.
    if (flags.token) throw new UsageError('--baseline FILE through --broker-admin stores the baseline, then binds to it: two calls, so give --key (or run keygate baseline put FILE --broker-admin first and bind by its name)');
    await adminCall(flags, 'baselines:approve', 'PUT', `/v1/admin/baselines/${encodeURIComponent(source.baseline.name)}`, source.baseline);
    return { baseline: source.baseline.name, pcrs: extra, ...role };
  }
  // Explicit PCRs, or a nitro-cli file's (no baseline to name).
  return { pcrs: { ...(source ? source.rule.pcrs : rule.image), ...extra }, ...role };
}

function warn(io: CliIo, answer: Record<string, unknown>): void {
  for (const b of (answer.baselines ?? []) as Array<ApprovalStatus & { name: string }>) {
    const warning = approvalWarning(b.name, b);
    if (warning) io.err(`keygate bind: warning: ${warning}\n`);
  }
}

/** Runs the bind on the broker; prints what the store path prints, with `via: URL` for the store. */
export async function bindThroughAdmin(io: CliIo, flags: AdminClientFlags, secret: string, rule: RuleFlags, bind?: BindBody): Promise<number> {
  const spec = await ruleSpec(flags, rule);
  const path = `/v1/admin/secrets/${encodeURIComponent(secret)}`;
  const via = `via: ${flags['broker-admin']}\n`;
  if (!bind) {
    const answer = await adminCall(flags, 'secrets:write', 'POST', `${path}/rules`, spec);
    const b = answer.binding as { version: number; allow: unknown[] };
    const named = spec.baseline !== undefined ? ` (baseline ${String(spec.baseline)})` : '';
    io.out(
      answer.added
        ? `added a measurement set${named} to ${secret}: version ${b.version} unchanged (the value is untouched), ${b.allow.length} allowed measurement sets\n${via}`
        : `${secret} already allows these measurements${named}; nothing changed\n${via}`,
    );
    warn(io, answer);
    return 0;
  }
  let answer: Record<string, unknown>;
  try {
    answer = await adminCall(flags, 'secrets:write', 'PUT', path, {
      value: { base64: Buffer.from(bind.value).toString('base64') },
      allow: [spec],
      provider: bind.provider,
      ...(bind.kmsKeyId ? { kmsKeyId: bind.kmsKeyId } : {}),
      ...(bind.recipient ? { mode: 'kms-recipient' } : {}),
      ...(bind.ttlSeconds !== undefined ? { ttlSeconds: bind.ttlSeconds } : {}),
      allowDebug: bind.allowDebug,
      instances: bind.instances,
      ...(bind.instanceTag ? { instanceTag: bind.instanceTag } : {}),
      add: bind.add,
    });
  } finally {
    bind.value.fill(0);
  }
  const b = answer.binding as { secret: string; version: number; allow: unknown[]; ttlSeconds: number; provider: string; mode?: string };
  io.out(`bound ${b.secret} version ${b.version} (${b.allow.length} allowed measurement set${b.allow.length === 1 ? '' : 's'}, ttl ${b.ttlSeconds}s, ${b.provider}${b.mode === 'kms-recipient' ? ', kms-recipient' : ''})\n${via}`);
  warn(io, answer);
  return 0;
}
