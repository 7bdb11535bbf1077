/**
 * Child process for the audit-lock tests: a broker on `<dir>/store` and
 * `<dir>/state` whose audit lock heartbeat is `<heartbeatMs>`; says
 * "listening <url>" and runs until killed.
 */
import { join } from 'node:path';
import { startBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';

const [dir, heartbeatMs] = process.argv.slice(2);
const broker = await startBroker(resolveConfig({ listen: '127.0.0.1:0', store: join(dir!, 'store'), stateDir: join(dir!, 'state') }), {
  log: silentLogger,
  auditLock: { heartbeatMs: Number(heartbeatMs ?? 2000) },
});
process.stdout.write(`listening ${broker.url}\n`);
