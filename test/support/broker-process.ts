/** A real `keygate broker` process for kill and fault tests: its config, one bound secret, and its URL once listening. */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BIN } from './cli.js';
import { APPROVED } from './enclave.js';
import type { TestPki } from './pki.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';

/** Writes `dir/keygate.json` (store and state under `dir`, the test root trusted, no rate limits) and binds `db` = "v". */
export async function prepareBrokerDir(dir: string, pki: TestPki): Promise<string> {
  const config = join(dir, 'keygate.json');
  const rateLimits = { perClientPerSecond: 0, perIdentityPerSecond: 0, perSecretPerSecond: 0, quarantineAfterDenials: 0 };
  writeFileSync(config, JSON.stringify({ store: 'store', stateDir: 'state', extraRootPems: [pki.root.pem], listen: '127.0.0.1:0', rateLimits }));
  const store = await FileStore.open(join(dir, 'store'));
  await bindSecret(store, await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key')), { secret: 'db', value: new TextEncoder().encode('v'), allow: [pcrSet(APPROVED)], provider: 'local' });
  return config;
}

/**
 * Spawns `keygate broker --config FILE`, behind `wrapper` (e.g. `prlimit --fsize=N`) when given,
 * and resolves once it prints its URL. Standard error is collected for failure messages.
 * `args` are further options: by default `--workers 1` (one process: these tests kill and inspect it).
 */
export async function spawnBroker(config: string, wrapper: readonly string[] = [], args: readonly string[] = ['--workers', '1']): Promise<{ child: ChildProcessWithoutNullStreams; url: string; stderr: () => string }> {
  const argv = [...wrapper, process.execPath, BIN, 'broker', '--config', config, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`broker exited ${code}: ${stderr}`)));
  });
  return { child, url, stderr: () => stderr };
}
