import type { BrokerConfig } from '../config.js';
import { perBrokerParts } from '../config.js';
import { statePaths } from '../state.js';
import { AWS_NITRO_ROOT_G1_PEM } from '../verify/index.js';
import { checkConfig, type TrustedKeySummary, type TrustedRootSummary } from './check-config.js';
import { X509Certificate } from 'node:crypto';

/** The fields of the broker's start-up log line: where it listens, what it stores where, and what it trusts. */
export interface StartupSummary {
  readonly listen: string;
  readonly adminListen: string | null;
  readonly store: { readonly kind: 'file'; readonly dir: string } | { readonly kind: 'dynamodb'; readonly table: string };
  readonly audit: { readonly kind: 'file'; readonly file: string } | { readonly kind: 'dynamodb'; readonly table: string };
  readonly dev: boolean;
  readonly roots: readonly TrustedRootSummary[];
  /** Baseline approvers and the approvals a baseline needs. */
  readonly adminKeys: readonly TrustedKeySummary[];
  readonly approvalsRequired: number;
  /** Signers whose tokens the admin API accepts (empty: no admin API). */
  readonly adminApiKeys: readonly TrustedKeySummary[];
  /** Everything that weakens the broker on purpose (development mode, foreign roots, debug enclaves, ...). */
  readonly warnings: readonly string[];
}

const AWS_ROOT_SHA256 = new X509Certificate(AWS_NITRO_ROOT_G1_PEM).fingerprint256.replace(/:/g, '').toLowerCase();

/**
 * What the broker announces once it listens. The trust part is `keygate broker --check-config`'s own
 * computation (roots with SHA-256 fingerprints, key thumbprints), so the log and the check agree.
 * Holds no secret and no secret name; no settings beyond these (a programmatic config may carry
 * credentials).
 */
export async function startupSummary(config: BrokerConfig, listening: { readonly url: string; readonly adminUrl?: string }): Promise<StartupSummary> {
  const { trust } = await checkConfig(config);
  const warnings: string[] = [];
  if (config.dev) warnings.push('DEVELOPMENT MODE: the NSM simulator root is trusted; not for production secrets');
  const foreign = trust.roots.filter((r) => r.sha256 !== AWS_ROOT_SHA256).length;
  if (foreign) warnings.push(`NON-AWS ROOTS ARE TRUSTED (${foreign}): attestation documents signed under them are accepted`);
  if (config.allowDebug) warnings.push('allowDebug: bindings with allowDebug release to debug enclaves (their memory is readable by the parent)');
  if (config.metricsSecretLabels) warnings.push('metricsSecretLabels: the unauthenticated /metrics names released secrets');
  for (const part of perBrokerParts(config)) warnings.push(`per-broker state on a shared store: ${part}`);
  return {
    listen: listening.url,
    adminListen: listening.adminUrl ?? null,
    store: typeof config.store === 'string' ? { kind: 'file', dir: config.store } : { kind: 'dynamodb', table: config.store.table },
    audit: config.audit.kind === 'file' ? { kind: 'file', file: statePaths(config).audit } : { kind: 'dynamodb', table: config.audit.table },
    dev: trust.dev,
    roots: trust.roots,
    adminKeys: trust.adminKeys,
    approvalsRequired: trust.approvalsRequired,
    adminApiKeys: trust.adminApiKeys,
    warnings,
  };
}
