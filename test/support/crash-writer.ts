/**
 * Child process for the crash test: binds secrets and appends audit records
 * as fast as it can, printing each one only after it is durable, until the
 * parent kills it with SIGKILL.
 */
import '../support/setup.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { AuditLog } from '../../broker/audit/log.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { loadOrCreateSigningKey } from '../../broker/signing-key.js';
import { join } from 'node:path';

const dir = process.argv[2]!;
const h = (b: number): string => b.toString(16).padStart(2, '0').repeat(48);
const store = await FileStore.open(join(dir, 'store'));
const provider = await LocalKeyProvider.open(join(dir, 'local.key'));
const key = await loadOrCreateSigningKey(join(dir, 'signing.jwk'));
const audit = await AuditLog.open(join(dir, 'audit.jsonl'), { key: key.privateKey, kid: key.kid });
process.stdout.write('ready\n');
for (let i = 0; ; i++) {
  const secret = `s${i % 7}`;
  const b = await bindSecret(store, provider, { secret, value: new TextEncoder().encode(`v${i}`), allow: [pcrSet({ 0: h(1), 1: h(2), 2: h(3) })], provider: 'local' });
  process.stdout.write(`bind ${secret} ${b.version}\n`);
  await Promise.all(
    [0, 1, 2].map((j) =>
      audit
        .append({ time: new Date().toISOString(), decision: 'release', code: 'RELEASED', secret, version: b.version, moduleId: null, pcrs: null, docSha256: null, nonce: null, client: `c${j}`, latencyMs: 0 })
        .then(() => process.stdout.write(`audit ${secret} ${b.version} c${j}\n`)),
    ),
  );
}
