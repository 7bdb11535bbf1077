import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import { initNonceTable } from '../../broker/nonce/open-registry.js';
import type { DynamoDbNonceSettings } from '../../broker/nonce/dynamodb-registry.js';
import { mintAdminToken } from '../../broker/admin-api/token.js';
import { ConfigError, resolveConfig } from '../../broker/config.js';
import { startTestBroker } from '../support/broker.js';
import { motoTable, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { tempDirs } from '../support/temp-dirs.js';

let moto: Moto;
const tempDir = tempDirs('keygate-adminapi-rep-');

beforeAll(async () => {
  moto = await startMoto();
}, 120_000);
afterAll(async () => {
  await moto?.stop();
});

describe('admin API with replicas', () => {
  it('a token used on one broker is refused as replayed on another sharing the DynamoDB nonce table (jti single use across replicas)', async () => {
    const settings: DynamoDbNonceSettings = motoTable(moto, uniqueName('adminjti'));
    await initNonceTable(settings);
    const shared = tempDir();
    const key = generateKeyPairSync('ed25519').privateKey;
    writeFileSync(join(shared, 'api.pub.jwk'), JSON.stringify(await exportJWK(createPublicKey(key))));
    const extra = { nonces: settings, adminListen: '127.0.0.1:0', adminApiKeys: [join(shared, 'api.pub.jwk')] };
    const a = await startTestBroker(tempDir(), [], extra);
    const b = await startTestBroker(tempDir(), [], extra);
    try {
      const token = await mintAdminToken({ key, scopes: ['secrets:read'], audience: 'keygate-admin', ttlSeconds: 60, now: Date.now(), jti: randomUUID() });
      const get = (url: string): Promise<Response> => fetch(`${url}/v1/admin/secrets`, { headers: { authorization: `Bearer ${token}` } });
      // Both at once, each twice: exactly one is served.
      const answers = await Promise.all([a.adminUrl!, b.adminUrl!, a.adminUrl!, b.adminUrl!].map(get));
      const bodies = (await Promise.all(answers.map((r) => r.json()))) as Array<{ error?: { code: string; reason: string } }>;
      expect(answers.map((r) => r.status).sort()).toEqual([200, 401, 401, 401]);
      expect(bodies.filter((x) => x.error).map((x) => [x.error!.code, x.error!.reason])).toEqual(Array(3).fill(['UNAUTHORIZED', 'TOKEN_REPLAYED']));
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  }, 120_000);
});

describe('admin API config', () => {
  it('adminListen follows the TLS rule of listen: plain HTTP only on loopback', () => {
    expect(() => resolveConfig({ adminListen: '0.0.0.0:8444' })).toThrow(ConfigError);
    expect(() => resolveConfig({ adminListen: '0.0.0.0:8444' })).toThrow(/adminListen/);
    expect(resolveConfig({ adminListen: '0.0.0.0:8444', listen: '0.0.0.0:8443', tls: { cert: 'c.pem', key: 'k.pem' } }).adminListen).toBe('0.0.0.0:8444');
    expect(resolveConfig({}).adminListen).toBe('127.0.0.1:8444');
    expect(resolveConfig({}).adminAudience).toBe('keygate-admin');
    expect(() => resolveConfig({ adminAudience: 'has space' })).toThrow(/adminAudience/);
  });
});
