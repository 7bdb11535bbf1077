import { join } from 'node:path';
import type { BrokerConfig } from './config.js';
import { initStore, openStore } from './store/open-store.js';
import { initNonceTable } from './nonce/open-registry.js';
import { initQuarantineTable } from './quarantine/open-quarantine.js';
import { initAuditTable } from './audit/open-sink.js';
import type { BindingStore } from './store/store.js';
import type { KeyProviders } from './kms/provider.js';
import { openKeyProviders } from './kms/registry.js';

/**
 * The broker's state (key files, audit log) and key providers, opened the
 * same way by the broker and by admin operations (the CLI, a future admin
 * API). Kept apart from broker.ts so opening them loads neither hono nor,
 * until a provider is opened, the AWS SDK.
 */

/** Paths of the broker's state files. */
export function statePaths(config: BrokerConfig): { signingKey: string; localKey: string; challengeKey: string; audit: string } {
  return {
    signingKey: join(config.stateDir, 'broker-signing-key.jwk'),
    localKey: join(config.stateDir, 'local-provider.key'),
    challengeKey: config.challengeKeyFile ?? join(config.stateDir, 'challenge.key'),
    audit: config.auditFile ?? join(config.stateDir, 'audit.jsonl'),
  };
}

/**
 * Opens the key providers the store may need (the registry builds them; the AWS SDK loads on demand).
 * On a shared (DynamoDB) store the local provider is refused: its key file is per machine.
 */
export function openProviders(config: BrokerConfig): Promise<KeyProviders> {
  return openKeyProviders({ localKeyFile: statePaths(config).localKey, ...(config.kms ? { kms: config.kms } : {}), refuseLocal: typeof config.store !== 'string' });
}

/**
 * Opens the bindings store for an admin operation. A file failing validation
 * does not stop it: it is returned as a problem (what it governs stays
 * unavailable to brokers until fixed), for the caller to report.
 */
export async function openAdminStore(config: BrokerConfig): Promise<{ store: BindingStore; problems: string[] }> {
  const problems: string[] = [];
  const store = await openStore(config, { onProblem: (p) => problems.push(`${p.file}: ${p.message}`) });
  return { store, problems };
}

/**
 * `keygate store init`: creates what the configured shared state needs, idempotently, and reports each
 * step: the store (table or directory), then the shared nonce, quarantine and audit tables when configured.
 */
export async function initSharedState(config: BrokerConfig): Promise<string[]> {
  const report = await initStore(config);
  if (config.nonces.kind === 'dynamodb') {
    const done = await initNonceTable(config.nonces);
    report.push(`nonce table ${done.table}: ${done.created ? 'created' : 'exists'}, TTL ${done.ttlEnabled ? 'enabled' : 'NOT enabled'}`);
  }
  if (config.quarantine.kind === 'dynamodb') {
    const done = await initQuarantineTable(config.quarantine);
    report.push(`quarantine table ${done.table}: ${done.created ? 'created' : 'exists'}, TTL ${done.ttlEnabled ? 'enabled' : 'NOT enabled'}`);
  }
  if (config.audit.kind === 'dynamodb') {
    report.push(await initAuditTable(config.audit));
    // The archive module (and with it the S3 client) loads only when an archive is configured.
    if (config.audit.archive) report.push(...(await (await import('./audit/archive/open-archive.js')).initArchiveBucket(config.audit.archive)));
  }
  return report;
}
