/**
 * Human approval on the DynamoDB store (moto_server): pending requests live in the store table's own
 * "approval" partition (never `pk = "store"`), survive a broker process killed with SIGKILL, are granted
 * through `keygate approvals` while no broker runs, and are released once: with two broker processes on
 * the same table answering concurrently, exactly one request receives the value (conditional write).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import type { JWK } from 'jose';
import { CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { DynamoDBClient, QueryCommand } from '@aws-sdk/client-dynamodb';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../support/enclave.js';
import { cli, keygate } from '../support/cli.js';
import { spawnBroker } from '../support/broker-process.js';
import { startMoto, uniqueName, type Moto } from '../support/moto.js';
import { approverKid, signDecision } from '../../broker/approval/operations.js';
import { DynamoDbApprovalStore } from '../../broker/approval/dynamodb-approvals.js';
import { ApprovalGate, MAX_OPEN_APPROVALS_PER_INSTANCE, UNGRANTED_RETENTION_MS } from '../../broker/approval/gate.js';
import { ApprovalError } from '../../broker/approval/request.js';
import { parseApprovalPolicy } from '../../broker/policy/schema.js';
import type { Binding } from '../../broker/policy/types.js';
import type { KeyObject } from 'node:crypto';

let moto: Moto;
let pki: TestPki;
let dir: string;
let savedEnv: NodeJS.ProcessEnv;
const table = uniqueName('keygate-approvals');
const children: ChildProcessWithoutNullStreams[] = [];
const files: Record<string, { priv: string; pub: string; kid: string; key: KeyObject }> = {};

/** A broker config on the shared table; each broker process gets its own state directory (audit file, keys). */
function config(name: string): string {
  const path = join(dir, `${name}.json`);
  const rateLimits = { perClientPerSecond: 0, perIdentityPerSecond: 0, perSecretPerSecond: 0, quarantineAfterDenials: 0 };
  writeFileSync(path, JSON.stringify({ store: { kind: 'dynamodb', table, consistency: { maxStalenessMs: 0 } }, stateDir: `state-${name}`, extraRootPems: [pki.root.pem], listen: '127.0.0.1:0', rateLimits }));
  return path;
}

async function start(name: string): Promise<{ child: ChildProcessWithoutNullStreams; url: string; key: JWK }> {
  const { child, url } = await spawnBroker(config(name));
  children.push(child);
  return { child, url, key: (await (await fetch(`${url}/v1/broker-key`)).json()) as JWK };
}

function kill(child: ChildProcessWithoutNullStreams): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

async function decide(sub: 'grant' | 'deny', id: string, who: string): Promise<{ status: number | null; json: { error?: { code: string }; grants?: number; changed?: boolean } }> {
  const r = await cli(['approvals', sub, id, '--key', files[who]!.priv, '--json', '--config', join(dir, 'a.json')]);
  return { status: r.status, json: JSON.parse(r.stdout) as { error?: { code: string }; grants?: number } };
}

type Pending = { error: { code: string }; approvals: Array<{ id: string; version: number }> };

beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
  dir = mkdtempSync(join(tmpdir(), 'keygate-approval-ddb-'));
  for (const name of ['alice', 'bob', 'carol', 'mallory']) {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    files[name] = { priv: join(dir, `${name}.jwk`), pub: join(dir, `${name}.pub`), kid: approverKid(privateKey), key: privateKey };
    writeFileSync(files[name]!.priv, JSON.stringify(privateKey.export({ format: 'jwk' })));
    writeFileSync(files[name]!.pub, JSON.stringify(publicKey.export({ format: 'jwk' })));
  }
  const init = keygate(['store', 'init', '--config', config('a')]);
  expect(init.status, init.stderr).toBe(0);
  // The local provider is refused on a shared store: aws-kms, on moto's KMS.
  const kms = new KMSClient({});
  const keyId = (await kms.send(new CreateKeyCommand({ Description: 'keygate approval test' }))).KeyMetadata!.KeyId!;
  kms.destroy();
  const bind = await cli(
    ['bind', 'payments', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--value-stdin', '--provider', 'aws-kms', '--kms-key-id', keyId,
      '--approval', `2-of ${files.alice!.pub},${files.bob!.pub},${files.carol!.pub}`, '--approval-window', '15m', '--config', join(dir, 'a.json')],
    'ddb-pay',
  );
  expect(bind.status, bind.stderr).toBe(0);
}, 180_000);

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) await kill(child);
  process.env = savedEnv;
  await moto?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('human approval on the DynamoDB store', () => {
  it('a pending request survives SIGKILL of the broker (in the "approval" partition, not the store\'s), is granted with no broker running, then released once', async () => {
    const first = await start('a');
    const enclave = new TestEnclave(pki, first.url);
    const pending = await enclave.request(['payments']);
    expect(pending.status).toBe(202);
    const id = (pending.body as unknown as Pending).approvals[0]!.id;
    await kill(first.child);

    const ddb = new DynamoDBClient({});
    const items = await ddb.send(new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: 'approval' } }, ConsistentRead: true }));
    expect(items.Items?.map((i) => i.sk?.S)).toEqual([`request#${id}`]);
    const store = await ddb.send(new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: 'store' } }, ConsistentRead: true }));
    expect(store.Items?.some((i) => i.sk?.S?.includes('apr_'))).toBe(false);
    ddb.destroy();

    const listed = await cli(['approvals', 'list', '--json', '--config', join(dir, 'a.json')]);
    expect(listed.status, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toMatchObject([{ id, secret: 'payments', version: 1, status: 'pending', grants: [] }]);
    expect(await decide('grant', id, 'mallory')).toMatchObject({ status: 2, json: { error: { code: 'APPROVAL_NOT_APPROVER' } } });
    expect(await decide('grant', id, 'alice')).toMatchObject({ status: 0, json: { grants: 1 } });
    expect(await decide('grant', id, 'alice')).toMatchObject({ status: 0, json: { grants: 1, changed: false } });
    expect(await decide('grant', id, 'carol')).toMatchObject({ status: 0, json: { grants: 2 } });

    const second = await start('a');
    const again = new TestEnclave(pki, second.url, enclave.pcrs);
    const res = await again.request(['payments']);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(valueOf(await again.open(res.body.secrets![0]!, second.key))).toBe('ddb-pay');
    const next = await again.request(['payments']);
    expect(next.status).toBe(202);
    expect((next.body as unknown as Pending).approvals[0]!.id).not.toBe(id);
    await kill(second.child);
  });

  it('two broker processes on one table: of concurrent requests after the grants, exactly one receives the value (single use, conditional write)', async () => {
    const [a, b] = [await start('a'), await start('b')];
    const ea = new TestEnclave(pki, a.url);
    const eb = new TestEnclave(pki, b.url, ea.pcrs);
    const first = await ea.request(['payments']);
    expect(first.status).toBe(202);
    const id = (first.body as unknown as Pending).approvals[0]!.id;
    await decide('grant', id, 'bob');
    await decide('grant', id, 'carol');
    const answers = await Promise.all([ea.request(['payments']), eb.request(['payments']), ea.request(['payments']), eb.request(['payments'])]);
    const ok = answers.filter((r) => r.status === 200);
    expect(ok, JSON.stringify(answers.map((r) => [r.status, r.body.error?.code]))).toHaveLength(1);
    // The others: the approval was used (409 APPROVAL_CONSUMED), or they already found it used and started a new request (202).
    for (const r of answers.filter((x) => x.status !== 200)) expect(['APPROVAL_CONSUMED', 'APPROVAL_PENDING']).toContain(r.body.error?.code);
  });

  it('the attack fixes hold on DynamoDB too: a widened window grants nothing, one instance opens at most its bound, ungranted finished items are deleted', async () => {
    // Its own table, so the far-future sweep below touches no other test's requests.
    const own = uniqueName('keygate-approvals-attacks');
    writeFileSync(join(dir, 'own.json'), JSON.stringify({ store: { kind: 'dynamodb', table: own, consistency: { maxStalenessMs: 0 } }, stateDir: 'state-own', extraRootPems: [pki.root.pem], listen: '127.0.0.1:0' }));
    const init = keygate(['store', 'init', '--config', join(dir, 'own.json')]);
    expect(init.status, init.stderr).toBe(0);
    const store = new DynamoDbApprovalStore({ kind: 'dynamodb', table: own });
    try {
      const gate = new ApprovalGate(store);
      const jwk = (who: string): { kid: string; jwk: { kty: string; crv: string; x: string } } => ({ kid: files[who]!.kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: (files[who]!.key.export({ format: 'jwk' }) as { x: string }).x } });
      const t = Date.now();
      const binding = { secret: 'payments', version: 1, approval: parseApprovalPolicy({ required: 2, windowSeconds: 60, approvers: [jwk('alice'), jwk('bob')] }), revoked: false, updatedAt: new Date(t - 1000).toISOString() } as unknown as Binding;
      const identity = (instance: string, n: number): Parameters<ApprovalGate['evaluate']>[1] => ({ moduleId: `${instance}-enc${n.toString(16).padStart(16, '0')}`, pcrs: { 0: APPROVED[0], 1: APPROVED[1], 2: APPROVED[2] } }) as unknown as Parameters<ApprovalGate['evaluate']>[1];
      const first = await gate.evaluate([binding], identity('i-0bbbbbbbbbbbbbbbb', 0), t);
      expect(first.kind).toBe('pending');
      // A table writer widens the window to a day; the approvers sign the widened statement.
      const stored = (await store.list())[0]!;
      const widened = { ...stored, expiresAt: new Date(Date.parse(stored.createdAt) + 86_400_000).toISOString() };
      const signed = { ...widened, grants: ['alice', 'bob'].map((w) => ({ ...signDecision(widened, 'grant', files[w]!.key), at: new Date(t).toISOString() })), rev: stored.rev + 1 };
      expect(await store.replace(signed)).toBe(true);
      const late = await gate.evaluate([binding], identity('i-0bbbbbbbbbbbbbbbb', 0), t + 120_000);
      expect(late).toMatchObject({ kind: 'refused', code: 'APPROVAL_EXPIRED' });
      // One instance, many enclave launches: at most MAX_OPEN_APPROVALS_PER_INSTANCE open requests.
      for (let n = 0; n < MAX_OPEN_APPROVALS_PER_INSTANCE; n++) expect((await gate.evaluate([binding], identity('i-0aaaaaaaaaaaaaaaa', n), t)).kind).toBe('pending');
      const over = await gate.evaluate([binding], identity('i-0aaaaaaaaaaaaaaaa', MAX_OPEN_APPROVALS_PER_INSTANCE), t).catch((err: unknown) => err);
      expect((over as ApprovalError).code).toBe('APPROVAL_LIMIT');
      // Ungranted and ended: closed by one sweep, deleted by a later one; the signed (widened) one is kept longer.
      const bindings = new Map([['payments', binding]]);
      await gate.sweep(bindings, t + 61_000);
      await gate.sweep(bindings, t + 61_000 + UNGRANTED_RETENTION_MS + 1_000);
      expect((await store.list()).map((r) => r.id)).toEqual([stored.id]);
    } finally {
      store.close();
    }
  }, 120_000);
});
