/**
 * An in-process broker with its admin API on, for the admin API tests: a fresh
 * Ed25519 API-token key and approver key, their public JWKs written under `dir`,
 * and a broker (abuse limits off) that trusts them, with the caller's logger and
 * clock so tests can read log lines and move time.
 */
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import { createBroker, type Broker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import type { Logger } from '../../broker/log.js';
import { NO_RATE_LIMITS } from './broker.js';

/** The private halves of the keys an admin broker under `dir` trusts (see writeAdminKeys). */
export interface AdminKeys {
  /** Signs admin API tokens (trusted via dir/api.pub.jwk). */
  readonly apiKey: KeyObject;
  /** Signs baseline approvals (trusted via dir/approver.pub.jwk). */
  readonly approverKey: KeyObject;
}

/** Writes `key` (as given: pass a public key) as a JWK file. */
export async function writeJwk(path: string, key: KeyObject): Promise<void> {
  await writeFile(path, JSON.stringify(await exportJWK(key)));
}

/** Makes a new API-token key and approver key and writes their public JWKs to dir/api.pub.jwk and dir/approver.pub.jwk. */
export async function writeAdminKeys(dir: string): Promise<AdminKeys> {
  const apiKey = generateKeyPairSync('ed25519').privateKey;
  const approverKey = generateKeyPairSync('ed25519').privateKey;
  await writeJwk(join(dir, 'api.pub.jwk'), createPublicKey(apiKey));
  await writeJwk(join(dir, 'approver.pub.jwk'), createPublicKey(approverKey));
  return { apiKey, approverKey };
}

/** Opens a broker (not listening) with store and state under `dir`, admin API on, trusting the keys writeAdminKeys wrote there. */
export function openAdminBroker(dir: string, deps: { log: Logger; clock: () => number }): Promise<Broker> {
  return createBroker(
    resolveConfig({
      listen: '127.0.0.1:0',
      adminListen: '127.0.0.1:0',
      store: join(dir, 'store'),
      stateDir: join(dir, 'state'),
      rateLimits: NO_RATE_LIMITS,
      adminApiKeys: [join(dir, 'api.pub.jwk')],
      adminKeys: [join(dir, 'approver.pub.jwk')],
    }),
    deps,
  );
}
