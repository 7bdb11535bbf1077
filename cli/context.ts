import { DEV_CONFIG, ConfigError, loadConfigFile, resolveConfig, type BrokerConfig } from '../broker/config.js';
import type { BindingStore } from '../broker/store/store.js';
import { openAdminStore, openProviders } from '../broker/state.js';
import type { KeyProviders } from '../broker/kms/provider.js';
import { access, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { UsageError } from './errors.js';

/**
 * The development admin key (private JWK; public at `.pub`), beside the dev PKI: one per working
 * directory. Every `--dev` command configures it as an admin key, and `keygate approve --dev` signs with
 * it by default. Development only: never listed outside `--dev`.
 */
export const DEV_ADMIN_KEY = join('.keygate-dev', 'admin.jwk');

/** Creates the development admin key if missing (`broker --dev`, `approve --dev`). */
export async function ensureDevAdminKey(): Promise<void> {
  // Loaded here, not at the top: every store command imports this module, few need ops/baselines (start-up, issue 15).
  const { ensureBaselineKey } = await import('../broker/ops/baselines.js');
  await ensureBaselineKey(DEV_ADMIN_KEY);
}

/** Options every store-touching command accepts. */
export const STORE_OPTIONS = {
  config: { type: 'string' },
  store: { type: 'string' },
  state: { type: 'string' },
  dev: { type: 'boolean' },
} as const;

export const STORE_USAGE = `  --config FILE      broker config (JSON); default $KEYGATE_CONFIG
  --store DIR        bindings store directory (overrides the config)
  --state DIR        broker state directory: keys (overrides the config)
  --dev              use the development store and state in ./.keygate-dev (with --config:
                     that config's store and state, plus trust in the NSM simulator)`;

export interface StoreFlags {
  config?: string;
  store?: string;
  state?: string;
  dev?: boolean;
  listen?: string;
}

/** Resolves the broker config from flags, the config file and defaults. */
export async function brokerConfig(flags: StoreFlags, env: NodeJS.ProcessEnv = process.env): Promise<BrokerConfig> {
  try {
    const file = flags.config ?? env.KEYGATE_CONFIG;
    // --dev trusts the NSM simulator's root. Over a configured store only when that config is named on the
    // same command line (--dev --config FILE: e.g. replicas against a local DynamoDB); never because
    // $KEYGATE_CONFIG happens to be set in the environment.
    if (flags.dev && !flags.config && env.KEYGATE_CONFIG) {
      throw new UsageError('--dev does not combine with $KEYGATE_CONFIG: development mode uses its own store and state in ./.keygate-dev (unset it, or name the config explicitly with --config)');
    }
    const fromFile = file ? await loadConfigFile(file) : {};
    const config = resolveConfig(
      flags.dev ? DEV_CONFIG : {},
      fromFile,
      flags.dev ? { dev: true } : {},
      flags.store ? { store: flags.store } : {},
      flags.state ? { stateDir: flags.state } : {},
      flags.listen ? { listen: flags.listen } : {},
    );
    // Development mode counts approvals by its own admin key, so the baseline walk works under --dev. The key is
    // created by `broker --dev` and `approve --dev` (ensureDevAdminKey), not by every --dev command.
    const devKey = `${DEV_ADMIN_KEY}.pub`;
    if (!flags.dev || !(await access(devKey).then(() => true, () => false))) return config;
    return { ...config, adminKeys: [...(config.adminKeys ?? []), resolve(devKey)] };
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(err.message);
    throw err;
  }
}

/**
 * brokerConfig for commands that open (and may create) the store and state: one of them must be
 * chosen explicitly. The built-in defaults (./keygate-store, ./keygate-state) are in the current
 * directory, where a `git add .` would pick up the local provider's key: never used silently.
 */
export async function storeConfig(flags: StoreFlags, env: NodeJS.ProcessEnv = process.env): Promise<BrokerConfig> {
  if (!flags.config && !env.KEYGATE_CONFIG && !flags.dev && !(flags.store && flags.state)) {
    const missing = flags.store ? '--store DIR needs --state DIR too (where the keys live)' : flags.state ? '--state DIR needs --store DIR too' : 'no store chosen';
    throw new UsageError(`${missing}: give --config FILE (or set $KEYGATE_CONFIG), --store DIR with --state DIR, or --dev (development store in ./.keygate-dev)`);
  }
  const config = await brokerConfig(flags, env);
  // A path that exists but is not a directory fails deep inside with ENOTDIR/EEXIST: say which setting is wrong.
  const dirs: Array<[string | undefined, string, string]> = [
    [typeof config.store === 'string' ? config.store : undefined, '--store', 'store'],
    [config.stateDir, '--state', 'stateDir'],
  ];
  for (const [dir, flag, key] of dirs) {
    if (dir === undefined) continue;
    const found = await stat(dir).catch(() => undefined);
    if (found && !found.isDirectory()) throw new UsageError(`${flags[flag === '--store' ? 'store' : 'state'] ? flag : `the config's "${key}"`} ${dir}: not a directory`);
  }
  return config;
}

/** Where a write went, for the line every writing command prints (a file store as an absolute path). */
export function storeWhere(config: BrokerConfig): string {
  return typeof config.store === 'string' ? resolve(config.store) : `dynamodb:${config.store.table}`;
}

/**
 * Runs `fn` on the store and key providers as the CLI uses them, then closes both (a DynamoDB
 * store's client and KMS connections are released even when `fn` fails).
 */
export async function withAdmin<T>(flags: StoreFlags, fn: (admin: { config: BrokerConfig; store: BindingStore; providers: KeyProviders }) => Promise<T>): Promise<T> {
  const admin = await openAdmin(flags);
  try {
    return await fn(admin);
  } finally {
    admin.store.close();
    for (const provider of admin.providers.values()) provider.close();
  }
}

/** The store and key providers, as the CLI uses them. */
export async function openAdmin(flags: StoreFlags): Promise<{ config: BrokerConfig; store: BindingStore; providers: KeyProviders }> {
  const config = await storeConfig(flags);
  const { store, problems } = await openAdminStore(config);
  if (problems.length) process.stderr.write(`keygate: warning: store files failing validation (what they govern is unavailable to brokers until fixed):\n  ${problems.join('\n  ')}\n`);
  return { config, store, providers: await openProviders(config) };
}
