import type { KeyObject } from 'node:crypto';
import type { BrokerConfig } from '../broker/config.js';
import { loadPublicKeyFile } from '../broker/signing-key.js';
import { OperationError } from '../broker/ops/errors.js';
import type { ApprovalStatus } from '../broker/ops/stored-baselines.js';
import { AdminError } from '../broker/admin.js';
import { SchemaError } from '../broker/policy/schema.js';
import { UsageError } from './errors.js';
import { brokerConfig, type StoreFlags } from './context.js';
import { openAdminStore } from '../broker/state.js';
import type { BindingStore } from '../broker/store/store.js';

/**
 * What the store commands for baselines and un-revocation share: their refusals as `CODE: message`
 * (exit 2; the code is stable, for scripts), and the approval status a broker with this configuration
 * would see.
 */

/** An operation's refusal, with its stable code first; anything else unchanged. */
export function coded(err: unknown): unknown {
  if (err instanceof OperationError) return new UsageError(`${err.code}: ${err.message}`, { hint: err.code === 'INPUT_UNREADABLE' || err.code === 'INPUT_INVALID' });
  if (err instanceof AdminError || err instanceof SchemaError) return new UsageError(`${err.code}: ${err.message}`, { hint: false });
  return err;
}

/**
 * The admin public keys the configuration lists (what brokers with it count approvals against).
 * A key file that cannot be read is named: such a broker would not start either.
 */
export async function configuredAdminKeys(config: BrokerConfig): Promise<KeyObject[]> {
  return Promise.all(
    (config.adminKeys ?? []).map((file) =>
      loadPublicKeyFile(file).catch((err: unknown) => {
        throw new UsageError(`adminKeys: cannot use ${file}: ${(err as Error).message}`, { hint: false });
      }),
    ),
  );
}

/** "2 of 2 required" and, when brokers would deny it, why and what to do; undefined when approved. */
export function approvalSummary(status: ApprovalStatus): string {
  return `${status.valid} valid approval(s) of ${status.required} required`;
}

export function approvalWarning(name: string, status: ApprovalStatus): string | undefined {
  if (status.approved) return undefined;
  if (status.adminKeys === 0) {
    return `no adminKeys are configured, so brokers with this configuration approve no baseline: rules naming "${name}" are denied (BASELINE_NOT_APPROVED) until adminKeys lists the approvers' public keys (under --dev: keygate approve ${name} --dev creates the development admin key, which --dev brokers count)`;
  }
  return `baseline "${name}" has ${approvalSummary(status)} by the configured adminKeys: brokers deny rules naming it (BASELINE_NOT_APPROVED) until it is approved (keygate approve ${name} --key ADMIN_KEY)`;
}

/** Runs `fn` on the configured store only (no key providers: nothing here encrypts), then closes it. */
export async function withStore<T>(flags: StoreFlags, fn: (admin: { config: BrokerConfig; store: BindingStore }) => Promise<T>): Promise<T> {
  const config = await brokerConfig(flags);
  const { store, problems } = await openAdminStore(config);
  try {
    if (problems.length) process.stderr.write(`keygate: warning: store files failing validation (what they govern is unavailable to brokers until fixed):\n  ${problems.join('\n  ')}\n`);
    return await fn({ config, store });
  } finally {
    store.close();
  }
}
