/** A real broker on 127.0.0.1 for tests and benchmarks, with abuse limits off so load and timing tests measure the broker itself. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig, type BrokerConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { NO_RATE_LIMITS } from '../../testing/kit.js';
import { APPROVED } from './enclave.js';

// Abuse limits off: the settings keygate/testing's kit gives its broker, declared once there.
export { NO_RATE_LIMITS };

/** Starts a broker with its store and state under `dir`, trusting `roots` besides AWS's. */
export function startTestBroker(dir: string, roots: readonly string[], extra: Partial<BrokerConfig> = {}): Promise<RunningBroker> {
  return startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), extraRootPems: roots, rateLimits: NO_RATE_LIMITS, ...extra }),
    { log: silentLogger },
  );
}

/** A test broker (as startTestBroker) whose own file store has `db` = "db-value" bound for the approved test identity. */
export async function startTestBrokerWithDb(dir: string, roots: readonly string[], extra: Partial<BrokerConfig> = {}): Promise<RunningBroker> {
  const store = await FileStore.open(join(dir, 'store'));
  const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
  await bindSecret(store, local, { secret: 'db', value: new TextEncoder().encode('db-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
  return startTestBroker(dir, roots, extra);
}

/** The `code` of every record in the audit file under `dir/state`, in order. */
export function auditCodesIn(dir: string): string[] {
  return readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { code?: string }).code)
    .filter((c): c is string => c !== undefined);
}

/** `code` and `secret` of every record with a code in the audit file under `dir/state`, in order. */
export function auditCodesAndSecretsIn(dir: string): Array<{ code: string; secret: string | null }> {
  return readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { code?: string; secret?: string | null })
    .filter((r) => r.code !== undefined)
    .map((r) => ({ code: r.code!, secret: r.secret ?? null }));
}

/** GET /readyz of a broker: the status, and the reason when it gives one; `timeoutMs` bounds a request that could hang. */
export async function readyz(b: { readonly url: string }, timeoutMs?: number): Promise<{ status: number; reason?: string }> {
  const res = await fetch(`${b.url}/readyz`, timeoutMs === undefined ? {} : { signal: AbortSignal.timeout(timeoutMs) });
  const body = (await res.json()) as { reason?: string };
  return { status: res.status, ...(body.reason === undefined ? {} : { reason: body.reason }) };
}
