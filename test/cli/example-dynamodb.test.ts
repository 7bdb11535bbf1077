/**
 * examples/broker-dynamodb.json, unchanged, run the way the README says:
 * `keygate store init --config FILE`, two `keygate broker --config FILE
 * --listen ... --dev` replicas started from the same directory, a secret bound
 * through the CLI with --provider aws-kms, `keygate get NAME --dev --broker
 * URL` against each replica, then the audit chains verified, exported to the
 * S3 Object Lock archive and verified with it. Only the AWS SDK environment
 * (AWS_REGION, AWS_ENDPOINT_URL, credentials) points it at moto.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cli, keygateServer } from '../support/cli.js';
import { startMoto, type Moto } from '../support/moto.js';
import { createKmsAlias } from '../support/replicas.js';
import { devPcrs } from '../../vsock-shim/simulator/nsm-simulator.js';

let moto: Moto;
let dir: string;
let savedEnv: NodeJS.ProcessEnv;
const EXAMPLE = fileURLToPath(new URL('../../examples/broker-dynamodb.json', import.meta.url));

beforeAll(async () => {
  moto = await startMoto();
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env); // in-process CLI runs and the broker subprocesses inherit it
  await createKmsAlias(moto);
  dir = mkdtempSync(join(tmpdir(), 'keygate-example-ddb-'));
}, 90_000);
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('examples/broker-dynamodb.json as the README runs it', () => {
  it('store init, two --dev replicas, bind, get from each, audit verify, export and verify with the archive', async () => {
    const config = join(dir, 'broker-dynamodb.json');
    copyFileSync(EXAMPLE, config);
    const init = await cli(['store', 'init', '--config', config], undefined, dir);
    expect(init.status, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/keygate-audit/);
    expect(init.stdout).toMatch(/keygate-audit-archive: created with Object Lock enabled/);
    expect((await cli(['store', 'init', '--config', config], undefined, dir)).stdout).toMatch(/keygate-audit-archive: exists/);

    const replicas = await Promise.all([0, 1].map(() => keygateServer(['broker', '--config', config, '--listen', '127.0.0.1:0', '--dev'], /listening on (http:\/\/\S+)/, dir)));
    try {
      const p = devPcrs();
      const bound = await cli(['bind', 'app-token', '--pcr0', p[0]!, '--pcr1', p[1]!, '--pcr2', p[2]!, '--value-stdin', '--provider', 'aws-kms', '--kms-key-id', 'alias/keygate', '--config', config], 'shared-token', dir);
      expect(bound.status, bound.stderr).toBe(0);
      for (const r of replicas) {
        // A replica sees the new binding within maxStalenessMs (1000 in the example): ask until it does (bounded).
        const deadline = Date.now() + 30_000;
        let got = await cli(['get', 'app-token', '--dev', '--broker', r.match[1]!], undefined, dir);
        while (got.status !== 0 && /POLICY_DENIED/.test(got.stderr) && Date.now() < deadline) got = await cli(['get', 'app-token', '--dev', '--broker', r.match[1]!], undefined, dir);
        expect(got.stderr).toMatch(/NSM SIMULATOR/);
        expect([got.status, got.stdout]).toEqual([0, 'shared-token']);
      }
    } finally {
      for (const r of replicas) expect(await r.stop()).toBe(0);
    }
    const verified = await cli(['audit', 'verify', '--config', config], undefined, dir);
    expect(verified.status, verified.stdout).toBe(0);
    // Each replica runs `keygate broker` with its default --workers (1): one chain per replica.
    expect(verified.stdout).toContain('audit chains intact: 2 chain(s)');
    const exported = await cli(['audit', 'export', '--config', config], undefined, dir);
    expect(exported.status, exported.stdout + exported.stderr).toBe(0);
    const withArchive = await cli(['audit', 'verify', '--config', config, '--archive'], undefined, dir);
    expect(withArchive.status, withArchive.stdout).toBe(0);
    expect(withArchive.stdout).toMatch(/archive s3:\/\/keygate-audit-archive intact, table matches it/);
  }, 180_000);
});
