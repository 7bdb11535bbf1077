/** A real broker on 127.0.0.1 for tests and benchmarks, with abuse limits off so load and timing tests measure the broker itself. */
import { join } from 'node:path';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig, type BrokerConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';

export const NO_RATE_LIMITS: BrokerConfig['rateLimits'] = {
  perClientPerSecond: 0,
  perIdentityPerSecond: 0,
  perSecretPerSecond: 0,
  quarantineAfterDenials: 0,
  quarantineWindowSeconds: 60,
  quarantineSeconds: 60,
};

/** Starts a broker with its store and state under `dir`, trusting `roots` besides AWS's. */
export function startTestBroker(dir: string, roots: readonly string[], extra: Partial<BrokerConfig> = {}): Promise<RunningBroker> {
  return startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), extraRootPems: roots, rateLimits: NO_RATE_LIMITS, ...extra }),
    { log: silentLogger },
  );
}
