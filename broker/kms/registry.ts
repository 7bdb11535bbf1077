import { PROVIDER_NAMES, type ProviderName } from '../policy/types.js';
import type { AwsKmsSettings } from './aws-kms.js';
import { LocalKeyProvider } from './local.js';
import type { KeyProvider, KeyProviders } from './provider.js';

/** What building the key providers needs from the broker config. */
export interface KeyProviderSettings {
  /** The local provider's 32-byte key file (created on first use). */
  readonly localKeyFile: string;
  /** aws-kms client settings; unset values come from the usual AWS SDK configuration. */
  readonly kms?: AwsKmsSettings;
  /** The store is shared by replicas: the local provider (a per-machine key file) is refused (see refused-local.ts). */
  readonly refuseLocal?: boolean;
}

/**
 * How each provider is built. A record over `ProviderName`: adding a name to
 * PROVIDER_NAMES does not compile until it has an opener here.
 */
const OPENERS: { readonly [N in ProviderName]: (settings: KeyProviderSettings) => Promise<KeyProvider & { readonly name: N }> } = {
  local: async (settings) => (settings.refuseLocal ? new (await import('./refused-local.js')).RefusedLocalProvider() : LocalKeyProvider.open(settings.localKeyFile)),
  // Loaded here, not at the top: the AWS SDK is the largest part of the module graph, and commands that
  // never use it (verify, list) must not pay for it. The SDK client itself is built on first use.
  'aws-kms': async (settings) => new (await import('./aws-kms.js')).AwsKmsKeyProvider(settings.kms ?? {}),
};

/** The one place that builds key providers from config: every provider a binding may name. */
export async function openKeyProviders(settings: KeyProviderSettings): Promise<Map<ProviderName, KeyProvider>> {
  const providers = new Map<ProviderName, KeyProvider>();
  for (const name of PROVIDER_NAMES) providers.set(name, await OPENERS[name](settings));
  return providers;
}

/** Closes every provider (shutdown). */
export function closeKeyProviders(providers: KeyProviders): void {
  for (const provider of providers.values()) provider.close();
}
