import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { BrokerConfig } from '../config.js';
import { loadPublicKeyFile } from '../signing-key.js';
import { adminKeyId } from '../admin-api/token.js';
import { AWS_NITRO_ROOT_G1_PEM } from '../verify/index.js';

/** A root the broker trusts: where it comes from, its subject and the SHA-256 of its DER. */
export interface TrustedRootSummary {
  readonly source: string;
  readonly subject: string;
  readonly sha256: string;
}

/** A key the broker honours: its file and its RFC 7638 thumbprint. */
export interface TrustedKeySummary {
  readonly file: string;
  readonly kid: string;
}

/** What `keygate broker --check-config` prints: the effective configuration and everything the broker would trust. */
export interface ConfigCheck {
  /** The configuration after defaults, files and flags (root PEMs replaced by their summaries below). */
  readonly config: Omit<BrokerConfig, 'extraRootPems'>;
  readonly trust: {
    readonly dev: boolean;
    readonly roots: readonly TrustedRootSummary[];
    /** Baseline approvers (`adminKeys`) and how many distinct approvals a baseline needs. */
    readonly adminKeys: readonly TrustedKeySummary[];
    readonly approvalsRequired: number;
    /** Signers of admin API tokens (`adminApiKeys`). */
    readonly adminApiKeys: readonly TrustedKeySummary[];
  };
}

function rootSummary(pem: string, source: string): TrustedRootSummary {
  const cert = new X509Certificate(pem);
  return { source, subject: cert.subject.replace(/\n/g, ', '), sha256: cert.fingerprint256.replace(/:/g, '').toLowerCase() };
}

async function keySummary(file: string): Promise<TrustedKeySummary> {
  return { file, kid: await adminKeyId(await loadPublicKeyFile(file)) };
}

/**
 * Reads every file the config names for trust (root PEMs, admin keys) the way the broker does at start,
 * without opening the store, keys, audit or network: an unreadable or malformed file throws here as it
 * would stop the broker.
 */
export async function checkConfig(config: BrokerConfig): Promise<ConfigCheck> {
  const roots: TrustedRootSummary[] = [];
  for (const file of config.roots ?? []) roots.push(rootSummary(await readFile(file, 'utf8'), file));
  if (!roots.length) roots.push(rootSummary(AWS_NITRO_ROOT_G1_PEM, 'bundled AWS Nitro root (G1)'));
  (config.extraRootPems ?? []).forEach((pem, i) => roots.push(rootSummary(pem, config.dev && i === (config.extraRootPems?.length ?? 0) - 1 ? 'NSM simulator development root (--dev)' : `extraRootPems[${i}]`)));
  const { extraRootPems: _pems, ...rest } = config;
  return {
    config: rest,
    trust: {
      dev: config.dev,
      roots,
      adminKeys: await Promise.all((config.adminKeys ?? []).map(keySummary)),
      approvalsRequired: config.approvalsRequired,
      adminApiKeys: await Promise.all((config.adminApiKeys ?? []).map(keySummary)),
    },
  };
}
