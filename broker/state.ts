import { join } from 'node:path';
import type { BrokerConfig } from './config.js';
import { FileStore } from './store/file-store.js';
import { LocalKeyProvider } from './kms/local.js';
import type { KeyProvider } from './kms/provider.js';
import type { ProviderName } from './policy/types.js';

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

/** Opens the key providers the store may need: local always, aws-kms as configured. */
export async function openProviders(config: BrokerConfig): Promise<Map<ProviderName, KeyProvider>> {
  const providers = new Map<ProviderName, KeyProvider>();
  providers.set('local', await LocalKeyProvider.open(statePaths(config).localKey));
  // Imported here, not at the top: the AWS SDK is the largest part of the module graph.
  const { AwsKmsKeyProvider } = await import('./kms/aws-kms.js');
  providers.set('aws-kms', new AwsKmsKeyProvider(config.kms ?? {}));
  return providers;
}

/**
 * Opens the bindings store for an admin operation. A file failing validation
 * does not stop it: it is returned as a problem (what it governs stays
 * unavailable to brokers until fixed), for the caller to report.
 */
export async function openStore(config: BrokerConfig): Promise<{ store: FileStore; problems: string[] }> {
  const problems: string[] = [];
  const store = await FileStore.open(config.store, { onProblem: (p) => problems.push(`${p.file}: ${p.message}`) });
  return { store, problems };
}
