/**
 * The keys every replica shares (challenge MAC key, broker signing key) on
 * DynamoDB + KMS, against moto_server (an independent implementation of
 * both): created once whoever races, the same key for every replica (the
 * same kid, nonces issued by one accepted by another), bound to their
 * purpose by the KMS encryption context, and a broker that cannot load them
 * does not start. Where moto differs from AWS: its KMS checks the encryption
 * context like AWS does (the ciphertext authenticates it), which is what the
 * purpose test relies on.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { CreateTableCommand, DynamoDBClient, PutItemCommand, QueryCommand, UpdateItemCommand, waitUntilTableExists } from '@aws-sdk/client-dynamodb';
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { ConfigError, resolveConfig } from '../../broker/config.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { initNonceTable } from '../../broker/nonce/open-registry.js';
import { openAdminStore } from '../../broker/state.js';
import { loadSharedKeys, openKeySource } from '../../broker/keys/open-key-source.js';
import { SharedKeyError, type SharedKeySettings } from '../../broker/keys/key-source.js';
import { keyItemKey } from '../../broker/keys/dynamodb-keys.js';
import { startTestBroker } from '../support/broker.js';
import { awsOf, closedPort, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../support/enclave.js';
import { keygate } from '../support/cli.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
let pki: TestPki;
let kmsKeyId: string;
const tempDir = tempDirs('keygate-shared-keys-');
const aws = () => awsOf(moto);
const dynamoKeys = (table: string, extra: Partial<Extract<SharedKeySettings, { kind: 'dynamodb' }>> = {}): Extract<SharedKeySettings, { kind: 'dynamodb' }> => ({ kind: 'dynamodb', table, kmsKeyId, ...aws(), ...extra });
/** A fresh key table keyed by `pk` alone (the nonce table's layout). */
async function keyTable(): Promise<string> {
  const table = uniqueName('keys');
  await initNonceTable({ kind: 'dynamodb', table, ...aws() });
  return table;
}
const noPaths = { signingKey: '/nonexistent/unused', challengeKey: '/nonexistent/unused' };


beforeAll(async () => {
  [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
  const kms = new KMSClient(aws());
  const created = await kms.send(new CreateKeyCommand({ Description: 'keygate shared keys (test)' }));
  await kms.send(new CreateAliasCommand({ AliasName: 'alias/keygate-test', TargetKeyId: created.KeyMetadata!.KeyId! }));
  kms.destroy();
  kmsKeyId = 'alias/keygate-test';
}, 120_000);
afterAll(async () => {
  await moto?.stop();
});

/** A new table keyed by pk + sk (the store table's layout), named from `prefix`; its name once it exists. */
async function createPkSkTable(ddb: DynamoDBClient, prefix: string): Promise<string> {
  const table = uniqueName(prefix);
  await ddb.send(
    new CreateTableCommand({
      TableName: table,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }, { AttributeName: 'sk', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }, { AttributeName: 'sk', KeyType: 'RANGE' }],
    }),
  );
  await waitUntilTableExists({ client: ddb, maxWaitTime: 60 }, { TableName: table });
  return table;
}

describe('shared keys on DynamoDB + KMS', () => {
  it('four instances racing to create the keys all end with the same key bytes and the same kid; the table holds only KMS ciphertext', async () => {
    const table = await keyTable();
    const sources = await Promise.all(Array.from({ length: 4 }, () => openKeySource(dynamoKeys(table), noPaths)));
    const loaded = await Promise.all(sources.map((s) => s.load()));
    for (const s of sources) s.close();
    const first = loaded[0]!;
    expect(first.challengeKey.length).toBe(32);
    for (const k of loaded) {
      expect(k.challengeKey.equals(first.challengeKey)).toBe(true);
      expect(k.signingKey.kid).toBe(first.signingKey.kid);
      expect(k.signingKey.publicJwk).toEqual(first.signingKey.publicJwk);
    }
    // A later start loads the same keys.
    const again = await loadSharedKeys(dynamoKeys(table), noPaths);
    expect(again.challengeKey.equals(first.challengeKey)).toBe(true);
    expect(again.signingKey.kid).toBe(first.signingKey.kid);
    // One item per key; the material is not stored in the clear. Looked for by its own bytes and JWK text: a short
    // marker such as '"d"' also turns up in the ~210 random bytes of the two KMS ciphertexts (about once in 80,000 runs).
    const d = first.signingKey.privateKey.export({ format: 'jwk' }).d!;
    const ddb = new DynamoDBClient(aws());
    for (const name of ['challenge-mac', 'broker-signing'] as const) {
      const items = (await ddb.send(new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: keyItemKey(name).pk } }, ConsistentRead: true }))).Items!;
      expect(items).toHaveLength(1);
      expect(items[0]!.purpose!.S).toBe(name);
      const blob = Buffer.from(items[0]!.ciphertext!.B!);
      expect(blob.includes(first.challengeKey)).toBe(false);
      expect(blob.includes(Buffer.from(d, 'base64url'))).toBe(false);
      expect(blob.toString('latin1')).not.toContain(d);
    }
    ddb.destroy();
  });

  it('works in a table keyed by pk + sk (the store table layout) as well', async () => {
    const ddb = new DynamoDBClient(aws());
    const table = await createPkSkTable(ddb, 'keys-pksk');
    ddb.destroy();
    const [a, b] = await Promise.all([loadSharedKeys(dynamoKeys(table), noPaths), loadSharedKeys(dynamoKeys(table), noPaths)]);
    expect(a.signingKey.kid).toBe(b.signingKey.kid);
    expect(a.challengeKey.equals(b.challengeKey)).toBe(true);
  });

  it('only the exact key item counts: an older key of the same purpose under the same pk (another sk) is refused, not loaded', async () => {
    const ddb = new DynamoDBClient(aws());
    const [current, older] = [await createPkSkTable(ddb, 'keys-exact'), await createPkSkTable(ddb, 'keys-exact')];
    const keys = await loadSharedKeys(dynamoKeys(current), noPaths);
    const olderKeys = await loadSharedKeys(dynamoKeys(older), noPaths);
    expect(olderKeys.signingKey.kid).not.toBe(keys.signingKey.kid);
    // A genuine ciphertext of the same purpose under the same KMS key (so it decrypts), placed under the same pk
    // with a sort key that sorts before "key": e.g. a copy restored from an older setup.
    const { pk } = keyItemKey('broker-signing');
    const olderItem = (await ddb.send(new QueryCommand({ TableName: older, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: pk } }, ConsistentRead: true }))).Items![0]!;
    await ddb.send(new PutItemCommand({ TableName: current, Item: { ...olderItem, sk: { S: 'a-older' } } }));
    ddb.destroy();
    const err = await loadSharedKeys(dynamoKeys(current), noPaths).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SharedKeyError);
    expect((err as SharedKeyError).code).toBe('SHARED_KEY_REJECTED');
    expect((err as SharedKeyError).message).toMatch(/other item\(s\) under pk "key#broker-signing"/);
  });

  it('a ciphertext moved to another purpose is refused: SHARED_KEY_REJECTED (the KMS encryption context names the purpose)', async () => {
    const table = await keyTable();
    await loadSharedKeys(dynamoKeys(table), noPaths);
    const ddb = new DynamoDBClient(aws());
    const query = (pk: string) => ddb.send(new QueryCommand({ TableName: table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': { S: pk } }, ConsistentRead: true }));
    const challengeItem = (await query(keyItemKey('challenge-mac').pk)).Items![0]!;
    // The attacker (anyone with write access to the table) swaps the challenge key's ciphertext into the signing key's item.
    await ddb.send(
      new UpdateItemCommand({
        TableName: table,
        Key: { pk: { S: keyItemKey('broker-signing').pk } },
        UpdateExpression: 'SET ciphertext = :c',
        ExpressionAttributeValues: { ':c': challengeItem.ciphertext! },
      }),
    );
    ddb.destroy();
    const err = await loadSharedKeys(dynamoKeys(table), noPaths).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SharedKeyError);
    expect((err as SharedKeyError).code).toBe('SHARED_KEY_REJECTED');
    expect((err as SharedKeyError).backendError).toBe('InvalidCiphertextException');
  });

  it('KMS unreachable at start: the broker does not start, SHARED_KEY_UNAVAILABLE', async () => {
    const table = await keyTable();
    const dir = tempDir();
    // DynamoDB answers; only KMS is gone (the SDK's per-service endpoint variable).
    const saved = { ...process.env };
    Object.assign(process.env, moto.env, { AWS_ENDPOINT_URL_KMS: `http://127.0.0.1:${await closedPort()}` });
    try {
      const { endpoint: _e, ...viaEnv } = dynamoKeys(table, { requestTimeoutMs: 5_000 });
      const err = await startTestBroker(dir, [pki.root.pem], { keys: viaEnv }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SharedKeyError);
      expect((err as SharedKeyError).code).toBe('SHARED_KEY_UNAVAILABLE');
      expect((err as SharedKeyError).message).toMatch(/KMS Encrypt/);
    } finally {
      process.env = saved;
    }
    // And DynamoDB unreachable (the table cannot even be read): the same code, naming DynamoDB.
    const err = await startTestBroker(dir, [pki.root.pem], { keys: dynamoKeys(table, { endpoint: `http://127.0.0.1:${await closedPort()}`, requestTimeoutMs: 5_000 }) }).catch((e: unknown) => e);
    expect((err as SharedKeyError).code).toBe('SHARED_KEY_UNAVAILABLE');
    expect((err as SharedKeyError).message).toMatch(/DynamoDB Query/);
  });

  it('keygate broker with the key table unreachable: refuses to start, exit 1, the code on stderr', async () => {
    const dir = tempDir();
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ stateDir: 'state', store: 'store', keys: { kind: 'dynamodb', table: 'keygate-keys', kmsKeyId: 'alias/keygate', region: 'us-east-1', endpoint: `http://127.0.0.1:${await closedPort()}`, requestTimeoutMs: 5_000 } }));
    const run = keygate(['broker', '--config', config, '--listen', '127.0.0.1:0']);
    expect(run.status, run.stderr).toBe(1);
    expect(run.stderr).toMatch(/^keygate broker: refusing to start: SHARED_KEY_UNAVAILABLE: shared keys: DynamoDB Query of (challenge-mac|broker-signing) in keygate-keys failed/m);
    expect(run.stdout).not.toMatch(/listening/);
  });

  it('a KMS key that does not exist: the broker does not start, SHARED_KEY_UNAVAILABLE', async () => {
    const table = await keyTable();
    const err = await loadSharedKeys(dynamoKeys(table, { kmsKeyId: 'alias/keygate-missing' }), noPaths).catch((e: unknown) => e);
    expect((err as SharedKeyError).code).toBe('SHARED_KEY_UNAVAILABLE');
    expect((err as SharedKeyError).backendError).toBe('NotFoundException');
  });

  it('two brokers sharing the key table sign with the same kid and each accepts the challenge nonces of the other', async () => {
    const table = await keyTable();
    const brokers: RunningBroker[] = [];
    try {
      const dirA = tempDir();
      const dirB = tempDir();
      // Each broker has its own file store and state directory; only the keys are shared.
      for (const dir of [dirA, dirB]) {
        const { store } = await openAdminStore(resolveConfig({ store: join(dir, 'store'), stateDir: join(dir, 'state') }));
        const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
        await bindSecret(store, local, { secret: 'db', value: new TextEncoder().encode('shared'), allow: [pcrSet(APPROVED)], provider: 'local' });
      }
      brokers.push(...(await Promise.all([dirA, dirB].map((dir) => startTestBroker(dir, [pki.root.pem], { keys: dynamoKeys(table) })))));
      const [a, b] = brokers as [RunningBroker, RunningBroker];
      const jwkA = (await (await fetch(`${a.url}/v1/broker-key`)).json()) as JWK;
      const jwkB = (await (await fetch(`${b.url}/v1/broker-key`)).json()) as JWK;
      expect(jwkA.kid).toBeTruthy();
      expect(jwkB.kid).toBe(jwkA.kid);

      // A nonce issued by A, presented to B, and the other way round: each is accepted, and the answer verifies under the one key.
      for (const [issuer, verifier] of [
        [a, b],
        [b, a],
      ] as const) {
        const enclave = new TestEnclave(pki, issuer.url);
        const document = enclave.document(await enclave.challenge());
        const res = await fetch(`${verifier.url}/v1/secrets`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ attestation: Buffer.from(document).toString('base64'), names: ['db'] }),
        });
        const body = (await res.json()) as { secrets?: Parameters<TestEnclave['open']>[0][]; error?: { code: string } };
        expect(res.status, JSON.stringify(body.error)).toBe(200);
        expect(valueOf(await enclave.open(body.secrets![0]!, jwkA))).toBe('shared');
      }
    } finally {
      await Promise.all(brokers.map((b) => b.close()));
    }
  });
});

describe('keys setting', () => {
  it('defaults to files; a dynamodb setting is checked', () => {
    expect(resolveConfig({}).keys).toEqual({ kind: 'file' });
    const ok = resolveConfig({ keys: { kind: 'dynamodb', table: 'keygate-keys', kmsKeyId: 'alias/keygate' } });
    expect(ok.keys).toEqual({ kind: 'dynamodb', table: 'keygate-keys', kmsKeyId: 'alias/keygate' });
    const bad: Array<[unknown, RegExp]> = [
      [{ kind: 'vault' }, /keys\.kind must be "file" or "dynamodb"/],
      [{ kind: 'file', table: 'x' }, /unknown setting "table"/],
      [{ kind: 'dynamodb', kmsKeyId: 'alias/keygate' }, /keys\.table/],
      [{ kind: 'dynamodb', table: 'keygate-keys' }, /keys\.kmsKeyId/],
      [{ kind: 'dynamodb', table: 'keygate-keys', kmsKeyId: 'alias/keygate', endpoint: 'ftp://x' }, /keys\.endpoint/],
      [{ kind: 'dynamodb', table: 'keygate-keys', kmsKeyId: 'alias/keygate', requestTimeoutMs: 0 }, /keys\.requestTimeoutMs/],
      ['file', /keys must be an object/],
    ];
    for (const [keys, message] of bad) {
      let err: unknown;
      try {
        resolveConfig({ keys: keys as SharedKeySettings });
      } catch (e) {
        err = e;
      }
      expect(err, JSON.stringify(keys)).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).code).toBe('CONFIG_INVALID');
      expect((err as Error).message).toMatch(message);
    }
  });
});
