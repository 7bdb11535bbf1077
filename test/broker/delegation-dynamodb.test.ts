/**
 * Delegations on the DynamoDB store (moto_server), with two broker replicas: uses are counted by
 * conditional writes shared by both (never more than maxUses, however requests are spread), the items
 * live in their own partition (the store's `pk = "store"` is untouched), `keygate delegations list` and
 * `keygate revoke --delegation` work on the table, and a revocation stops the next request on both.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { DynamoDBClient, QueryCommand } from '@aws-sdk/client-dynamodb';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { loadConfigFile, resolveConfig } from '../../broker/config.js';
import { openAdminStore } from '../../broker/state.js';
import { AwsKmsKeyProvider } from '../../broker/kms/aws-kms.js';
import { startTestBroker } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, buildPcrs, h, TestEnclave, type EnclaveResponse } from '../support/enclave.js';
import { cli } from '../support/cli.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';

let moto: Moto;
let pki: TestPki;
let dir: string;
let savedEnv: NodeJS.ProcessEnv;
const replicas: RunningBroker[] = [];
const table = uniqueName('keygate-deleg');
const nonceTable = uniqueName('keygate-deleg-nonces');
const SUB_PCRS = { 0: h(0x44), 1: h(0x22), 2: h(0x33) };
const config = (): string => join(dir, 'config.json');

async function post(url: string, path: string, body: unknown): Promise<EnclaveResponse & { body: { delegation?: string; id?: string } }> {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as EnclaveResponse['body'] };
}

async function attest(e: TestEnclave, moduleId: string): Promise<string> {
  return Buffer.from(e.document(await e.challenge(), { moduleId })).toString('base64');
}

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
  dir = mkdtempSync(join(tmpdir(), 'keygate-deleg-ddb-'));
  writeFileSync(config(), JSON.stringify({ store: { kind: 'dynamodb', table, consistency: { maxStalenessMs: 0 } }, nonces: { kind: 'dynamodb', table: nonceTable }, stateDir: 'state' }));
  const init = await cli(['store', 'init', '--config', config()]);
  expect(init.status, init.stderr).toBe(0);
  const resolved = resolveConfig(await loadConfigFile(config()));
  const { store } = await openAdminStore(resolved);
  const kms = new KMSClient({});
  const key = await kms.send(new CreateKeyCommand({ Description: 'keygate delegation test' }));
  kms.destroy();
  const awsKms = new AwsKmsKeyProvider({});
  await bindSecret(store, awsKms, { secret: 'db', value: new TextEncoder().encode('from-dynamodb'), allow: [pcrSet(APPROVED)], provider: 'aws-kms', kmsKeyId: key.KeyMetadata!.KeyId! });
  awsKms.close();
  store.close();
  // Two replicas of one config: the same signing key (one stateDir), each its own audit file.
  for (const n of [1, 2]) {
    replicas.push(await startTestBroker(dir, [pki.root.pem], { store: resolved.store, nonces: resolved.nonces, stateDir: resolved.stateDir, auditFile: join(dir, `audit-${n}.jsonl`) }));
  }
}, 120_000);

afterAll(async () => {
  for (const r of replicas) await r.close();
  process.env = savedEnv;
  await moto?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('delegations on the DynamoDB store, two replicas', () => {
  it('uses are counted across replicas (exactly maxUses of racing requests succeed); list and revoke work on the table; a revocation stops both replicas', async () => {
    const [a, b] = replicas as [RunningBroker, RunningBroker];
    const parent = new TestEnclave(pki, a.url);
    const sub = new TestEnclave(pki, a.url, buildPcrs(0x44));
    const subModule = 'i-0123456789abcdef0-enc00000000000000aa';
    const issued = await post(a.url, '/v1/delegations', { attestation: await attest(parent, 'i-0123456789abcdef0-enc0000000000000001'), names: ['db'], ttlSeconds: 60, maxUses: 3, audience: { pcrs: SUB_PCRS } });
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    const token = issued.body.delegation!;

    // Eight requests spread over both replicas (each with its own fresh document): three releases.
    const results = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const url = i % 2 ? b.url : a.url;
        const enclave = new TestEnclave(pki, url, buildPcrs(0x44));
        return post(url, '/v1/secrets', { attestation: await attest(enclave, subModule), names: ['db'], delegation: token });
      }),
    );
    expect(results.filter((r) => r.status === 200)).toHaveLength(3);
    expect(results.filter((r) => r.status !== 200).map((r) => r.body.error?.code)).toEqual(Array(5).fill('DELEGATION_EXHAUSTED'));

    // Its own partition: the store's items are untouched and still load without problems.
    const ddb = new DynamoDBClient({});
    const items = await ddb.send(new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: 'delegations' } } }));
    ddb.destroy();
    expect(items.Items?.map((i) => i.sk?.S)).toEqual([`delegation#${issued.body.id}`]);
    const listBindings = await cli(['list', '--json', '--config', config()]);
    expect(listBindings.status, listBindings.stderr).toBe(0);
    expect((JSON.parse(listBindings.stdout) as { problems: string[] }).problems).toEqual([]);

    const listed = await cli(['delegations', 'list', '--json', '--config', config()]);
    expect(listed.status, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { delegations: unknown[] }).delegations).toEqual([
      expect.objectContaining({ id: issued.body.id, names: ['db'], uses: 3, maxUses: 3, revoked: false, state: 'exhausted', depth: 1, parent: { moduleId: 'i-0123456789abcdef0-enc0000000000000001', pcr0: APPROVED[0] } }),
    ]);

    const second = await post(b.url, '/v1/delegations', { attestation: await attest(new TestEnclave(pki, b.url), 'i-0123456789abcdef0-enc0000000000000001'), names: ['db'], ttlSeconds: 60, maxUses: 10, audience: { pcrs: SUB_PCRS } });
    expect(second.status).toBe(200);
    expect((await post(a.url, '/v1/secrets', { attestation: await attest(sub, subModule), names: ['db'], delegation: second.body.delegation })).status).toBe(200);
    const revoked = await cli(['revoke', '--delegation', second.body.id!, '--config', config()]);
    expect(revoked.status, revoked.stderr).toBe(0);
    for (const url of [a.url, b.url]) {
      const r = await post(url, '/v1/secrets', { attestation: await attest(new TestEnclave(pki, url, buildPcrs(0x44)), subModule), names: ['db'], delegation: second.body.delegation });
      expect([r.status, r.body.error?.code], url).toEqual([403, 'DELEGATION_REVOKED']);
    }
    const after = JSON.parse((await cli(['delegations', 'list', '--json', '--config', config()])).stdout) as { delegations: Array<{ id: string; state: string; uses: number }> };
    expect(after.delegations.find((d) => d.id === second.body.id)).toMatchObject({ state: 'REVOKED', uses: 1 });
  }, 120_000);
});
