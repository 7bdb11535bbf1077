/**
 * A real broker on the DynamoDB store (moto_server): `keygate store init`
 * creates the table idempotently, a secret bound through the admin
 * operations is released, `keygate list --config` shows it, a revocation is
 * honoured at once (maxStalenessMs 0), and with DynamoDB gone the broker
 * releases nothing (503 STORE_UNAVAILABLE) and is not ready.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet, revokeSecret } from '../../broker/admin.js';
import { loadConfigFile, resolveConfig } from '../../broker/config.js';
import { openAdminStore } from '../../broker/state.js';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { AwsKmsKeyProvider } from '../../broker/kms/aws-kms.js';
import { startTestBroker } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../support/enclave.js';
import { keygate } from '../support/cli.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';

let moto: Moto;
let pki: TestPki;
let dir: string;
let savedEnv: NodeJS.ProcessEnv;
let broker: RunningBroker | undefined;
const table = uniqueName('keygate-broker');
const nonceTable = uniqueName('keygate-nonces');

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  savedEnv = { ...process.env };
  // Region, endpoint and credentials from the SDK's usual environment, for this process and the keygate subprocesses.
  Object.assign(process.env, moto.env);
  dir = mkdtempSync(join(tmpdir(), 'keygate-ddb-broker-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ store: { kind: 'dynamodb', table, consistency: { maxStalenessMs: 0 } }, nonces: { kind: 'dynamodb', table: nonceTable }, stateDir: 'state' }));
});
afterAll(async () => {
  await broker?.close();
  process.env = savedEnv;
  await moto?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('a broker on the DynamoDB store', () => {
  it('keygate store init creates the table, and running it again changes nothing', () => {
    const first = keygate(['store', 'init', '--config', join(dir, 'config.json')]);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`created table ${table} \\(on-demand\\)`));
    expect(first.stdout).toMatch(/enabled TTL on ttl/);
    // The shared nonce table is created by the same command.
    expect(first.stdout).toMatch(new RegExp(`nonce table ${nonceTable}: created, TTL enabled`));
    const again = keygate(['store', 'init', '--config', join(dir, 'config.json')]);
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`table ${table} exists`));
    expect(again.stdout).toMatch(/TTL on ttl already enabled/);
    expect(again.stdout).toMatch(new RegExp(`nonce table ${nonceTable}: exists, TTL enabled`));
  });

  it('releases a secret bound through the admin operations, keygate list --config shows it, a revocation is honoured at once', async () => {
    const config = resolveConfig(await loadConfigFile(join(dir, 'config.json')));
    const { store, problems } = await openAdminStore(config);
    expect(problems).toEqual([]);
    // The local provider is refused on a shared store (its key file is per machine): aws-kms, on moto's KMS.
    const kms = new KMSClient({});
    const key = await kms.send(new CreateKeyCommand({ Description: 'keygate broker test' }));
    kms.destroy();
    const awsKms = new AwsKmsKeyProvider({});
    await bindSecret(store, awsKms, { secret: 'db', value: new TextEncoder().encode('from-dynamodb'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: key.KeyMetadata!.KeyId! });
    awsKms.close();
    store.close();

    broker = await startTestBroker(dir, [pki.root.pem], { store: config.store, stateDir: config.stateDir });
    const brokerJwk = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
    const enclave = new TestEnclave(pki, broker.url);
    const res = await enclave.request(['db']);
    expect(res.status).toBe(200);
    expect(valueOf(await enclave.open(res.body.secrets![0]!, brokerJwk))).toBe('from-dynamodb');
    expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);

    const list = keygate(['list', '--json', '--config', join(dir, 'config.json')]);
    expect(list.status).toBe(0);
    const listed = JSON.parse(list.stdout) as { bindings: Array<{ secret: string; version: number; ciphertext?: string }>; problems: string[] };
    expect(listed.bindings.map((b) => [b.secret, b.version, b.ciphertext])).toEqual([['db', 1, undefined]]);
    expect(listed.problems).toEqual([]);

    // Another admin (another handle, another client) revokes: the broker reads the store version on each request.
    const other = (await openAdminStore(config)).store;
    await revokeSecret(other, 'db');
    const after = await enclave.request(['db']);
    expect([after.status, after.body.error?.code]).toEqual([403, 'POLICY_DENIED']);
    const audit = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { code?: string; secret?: string });
    expect(audit.filter((r) => r.code !== undefined).at(-1)).toMatchObject({ code: 'SECRET_REVOKED', secret: 'db' });
  });

  it('with DynamoDB unreachable the broker releases nothing (503 STORE_UNAVAILABLE) and /readyz is 503', async () => {
    expect(broker).toBeDefined();
    await moto.stop();
    const res = await new TestEnclave(pki, broker!.url).request(['db']);
    expect([res.status, res.body.error?.code]).toEqual([503, 'STORE_UNAVAILABLE']);
    expect(res.body.secrets).toBeUndefined();
    // /readyz reuses its last table check for up to 5 s (unauthenticated probes must not become table calls): poll, bounded.
    const deadline = Date.now() + 30_000;
    let status = (await fetch(`${broker!.url}/readyz`)).status;
    while (status !== 503 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      status = (await fetch(`${broker!.url}/readyz`)).status;
    }
    expect(status).toBe(503);
  });
});
