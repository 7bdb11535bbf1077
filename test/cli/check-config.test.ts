/**
 * `keygate broker --check-config` prints the effective configuration and what the broker would trust
 * (roots with SHA-256 fingerprints, admin keys, approvals required) and exits without starting; and
 * examples/broker.json holds every configuration key with its default, accepted as it is.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { DEFAULT_CONFIG } from '../../broker/config.js';
import { cli } from '../support/cli.js';

const EXAMPLE = fileURLToPath(new URL('../../examples/broker.json', import.meta.url));
/** SHA-256 of the AWS Nitro Enclaves root certificate (G1), as AWS publishes it. */
const AWS_ROOT_SHA256 = '641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-check-config-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

interface Checked {
  config: Record<string, unknown>;
  trust: { dev: boolean; roots: Array<{ source: string; subject: string; sha256: string }>; adminKeys: Array<{ file: string; kid: string }>; approvalsRequired: number; adminApiKeys: unknown[] };
}

describe('examples/broker.json', () => {
  it('holds every configuration key with its default (dev excepted: only the --dev flag sets it; verifyThreads too: its default depends on the machine\'s cores)', () => {
    const { dev: _dev, verifyThreads: _verifyThreads, ...defaults } = DEFAULT_CONFIG;
    expect(JSON.parse(readFileSync(EXAMPLE, 'utf8'))).toEqual(JSON.parse(JSON.stringify(defaults)));
  });
});

describe('keygate broker --check-config', () => {
  it('accepts examples/broker.json, prints the effective config and the bundled AWS root with its fingerprint, starts nothing', async () => {
    const r = await cli(['broker', '--config', EXAMPLE, '--check-config'], undefined, dir);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Checked;
    expect(out.config).toMatchObject({ listen: '127.0.0.1:8443', approvalsRequired: 1, dev: false });
    expect(out.trust.roots).toEqual([{ source: 'bundled AWS Nitro root (G1)', subject: expect.stringMatching(/CN=aws\.nitro-enclaves/), sha256: AWS_ROOT_SHA256 }]);
    expect(out.trust).toMatchObject({ dev: false, adminKeys: [], approvalsRequired: 1, adminApiKeys: [] });
    // Nothing was opened or created: no store, no state, no listener.
    expect(existsSync(join(dir, 'keygate-store'))).toBe(false);
    expect(existsSync(fileURLToPath(new URL('../../examples/keygate-store', import.meta.url)))).toBe(false);
  });

  it('lists admin keys by thumbprint, the approvals required and, with --dev, the simulator root', async () => {
    const admin = generateKeyPairSync('ed25519').publicKey;
    const jwk = await exportJWK(admin);
    writeFileSync(join(dir, 'alice.pub.jwk'), JSON.stringify(jwk));
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ store: 'store', stateDir: 'state', adminKeys: ['alice.pub.jwk'], approvalsRequired: 1 }));
    const r = await cli(['broker', '--config', join(dir, 'c.json'), '--dev', '--check-config'], undefined, dir);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Checked;
    expect(out.trust.adminKeys).toContainEqual({ file: join(dir, 'alice.pub.jwk'), kid: await calculateJwkThumbprint(jwk, 'sha256') });
    expect(out.trust.dev).toBe(true);
    expect(out.trust.roots.map((x) => x.source)).toEqual(['bundled AWS Nitro root (G1)', 'NSM simulator development root (--dev)']);
    expect(out.trust.roots[1]!.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('a root file that cannot be read is a usage error naming it (exit 2), as it would stop the broker', async () => {
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ store: 'store', stateDir: 'state', roots: ['missing-root.pem'] }));
    const r = await cli(['broker', '--config', join(dir, 'c.json'), '--check-config'], undefined, dir);
    expect([r.status, r.stderr]).toEqual([2, expect.stringMatching(/--check-config: .*missing-root\.pem/)]);
  });
});
