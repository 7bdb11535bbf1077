/** `keygate bind --recipient`: only with aws-kms, stored as mode kms-recipient, shown by `keygate list`. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cli } from '../support/cli.js';
import { APPROVED } from '../support/enclave.js';
import { startKmsServer, TEST_CREDENTIALS, type KmsTestServer } from '../support/kms-server.js';

let dir: string;
let kms: KmsTestServer;
let config: string;
const pcrs = ['--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2]];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-recipient-cli-'));
  kms = await startKmsServer();
  config = join(dir, 'keygate.json');
  writeFileSync(config, JSON.stringify({ store: 'store', stateDir: 'state', kms: { region: 'us-east-1', endpoint: kms.endpoint, credentials: TEST_CREDENTIALS } }));
});

afterAll(async () => {
  await kms?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('keygate bind --recipient', () => {
  it('needs --provider aws-kms (usage error, nothing written)', async () => {
    const r = await cli(['bind', 'r1', ...pcrs, '--recipient', '--value-stdin', '--config', config], 'v', dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--recipient needs --provider aws-kms');
    expect((await cli(['list', '--config', config], undefined, dir)).stdout).toBe('no bindings\n');
  });

  it('stores mode kms-recipient with the KMS ciphertext, and list shows it', async () => {
    const r = await cli(['bind', 'r1', ...pcrs, '--provider', 'aws-kms', '--kms-key-id', kms.keyId, '--recipient', '--value-stdin', '--config', config], 'recipient-cli-value', dir);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^bound r1 version 1 \(1 allowed measurement set, ttl 60s, aws-kms, kms-recipient\)\nstore: \S+\n$/);
    const stored = readFileSync(join(dir, 'store', 'bindings', 'r1.json'), 'utf8');
    expect(JSON.parse(stored)).toMatchObject({ provider: 'aws-kms', kmsKeyId: kms.keyId, mode: 'kms-recipient' });
    expect(stored).not.toContain('recipient-cli-value');
    expect((await cli(['list', '--config', config], undefined, dir)).stdout).toContain('r1  v1  ttl 60s  aws-kms  [kms-recipient]');
  });

  it('keeps the mode when the secret is bound again without --recipient (no silent fall back to the broker decrypting)', async () => {
    const pcr0 = ['--pcr0', 'ab'.repeat(48), '--pcr1', APPROVED[1], '--pcr2', APPROVED[2]];
    const r = await cli(['bind', 'r1', ...pcr0, '--add', '--provider', 'aws-kms', '--kms-key-id', kms.keyId, '--value-stdin', '--config', config], 'recipient-cli-value-2', dir);
    expect(r.stdout).toMatch(/^bound r1 version 2 \(2 allowed measurement sets, .*kms-recipient\)\nstore: \S+\n$/);
    expect(JSON.parse(readFileSync(join(dir, 'store', 'bindings', 'r1.json'), 'utf8'))).toMatchObject({ version: 2, mode: 'kms-recipient' });
    // Re-binding it to the local provider (the default) would let the broker decrypt it: refused, nothing changes;
    // unbinding first is how the mode is dropped on purpose.
    const local = await cli(['bind', 'r1', ...pcrs, '--value-stdin', '--config', config], 'recipient-cli-value-3', dir);
    expect([local.status, local.stderr]).toEqual([2, expect.stringMatching(/"r1" is bound in kms-recipient mode .*unbind it first/)]);
    expect(JSON.parse(readFileSync(join(dir, 'store', 'bindings', 'r1.json'), 'utf8'))).toMatchObject({ version: 2, mode: 'kms-recipient' });
    expect((await cli(['unbind', 'r1', '--config', config], undefined, dir)).status).toBe(0);
    const rebound = await cli(['bind', 'r1', ...pcrs, '--value-stdin', '--config', config], 'recipient-cli-value-3', dir);
    expect(rebound.stdout).toMatch(/^bound r1 version 3 .*, local\)\n/);
    expect(JSON.parse(readFileSync(join(dir, 'store', 'bindings', 'r1.json'), 'utf8')).mode).toBeUndefined();
  });
});
