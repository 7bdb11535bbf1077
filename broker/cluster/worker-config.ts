import { basename, dirname, extname, join } from 'node:path';
import type { BrokerConfig } from '../config.js';
import { statePaths } from '../state.js';

/** Environment variables that tell a forked `keygate broker` process it is worker `i` of `n`. */
export const WORKER_ENV = 'KEYGATE_BROKER_WORKER';
export const WORKERS_ENV = 'KEYGATE_BROKER_WORKERS';

/** The audit file of worker `i`: `audit.jsonl` -> `audit.w<i>.jsonl` beside it (its own hash chain and lock). */
export function workerAuditFile(config: BrokerConfig, i: number): string {
  const live = statePaths(config).audit;
  const ext = extname(live);
  return join(dirname(live), `${basename(live, ext)}.w${i}${ext}`);
}

/**
 * Worker `i`'s (1-based, of `n`) config, derived from the broker's:
 * - its own audit chain (file: `audit.w<i>.jsonl`; DynamoDB: a configured replicaId gets `-w<i>`), so no
 *   two processes ever append to one chain;
 * - the per-second rate limits divided by `n` (connections are spread over the workers, and the limits
 *   stay per worker): the sum over all workers stays at the configured limit. A limit is never taken
 *   below 0.5/s (a burst of one request), so with n > 2L the total may reach n/2 per second;
 * - the admin API and the credential gateway are served by worker 1 only (one admin jti file, one
 *   gateway budget counter in memory); other workers leave them out.
 * The nonce registry and the quarantine (memory kind) are the primary's: see openNonceRegistry/openQuarantine.
 */
export function workerConfig(config: BrokerConfig, i: number, n: number): BrokerConfig {
  const perWorker = (limit: number): number => (limit <= 0 ? limit : Math.max(limit / n, 0.5));
  const r = config.rateLimits;
  const audit =
    config.audit.kind === 'dynamodb' && config.audit.replicaId !== undefined ? { ...config.audit, replicaId: `${config.audit.replicaId.slice(0, 64 - `-w${i}`.length)}-w${i}` } : config.audit;
  const {
    adminApiKeys: _adminApiKeys,
    gateway: _gateway,
    ...rest
  } = config;
  return {
    ...(i === 1 ? config : rest),
    ...(config.audit.kind === 'file' ? { auditFile: workerAuditFile(config, i) } : {}),
    audit,
    rateLimits: { ...r, perClientPerSecond: perWorker(r.perClientPerSecond), perIdentityPerSecond: perWorker(r.perIdentityPerSecond), perSecretPerSecond: perWorker(r.perSecretPerSecond) },
  };
}

/** This process's place in a `keygate broker --workers N` cluster, from its environment (undefined: not a worker). */
export function workerIdentity(env: NodeJS.ProcessEnv = process.env): { readonly i: number; readonly n: number } | undefined {
  const i = Number(env[WORKER_ENV]);
  const n = Number(env[WORKERS_ENV]);
  if (!Number.isSafeInteger(i) || !Number.isSafeInteger(n) || i < 1 || n < 2 || i > n) return undefined;
  return { i, n };
}
