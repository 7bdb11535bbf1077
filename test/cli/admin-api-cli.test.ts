import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';
import { cli } from '../support/cli.js';

const P = (c: string): string => c.repeat(96);
const VALUE = 'cli-admin-api-secret-5d2e';

let dir: string;
let broker: RunningBroker;
let keyFile: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keygate-adminapi-cli-'));
  const key = generateKeyPairSync('ed25519').privateKey;
  keyFile = join(dir, 'admin-api.jwk');
  await writeFile(keyFile, JSON.stringify(await exportJWK(key)));
  await writeFile(join(dir, 'admin-api.pub.jwk'), JSON.stringify(await exportJWK(createPublicKey(key))));
  broker = await startTestBroker(join(dir, 'b'), [], { adminListen: '127.0.0.1:0', adminApiKeys: [join(dir, 'admin-api.pub.jwk')] });
});

afterAll(async () => {
  await broker?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('keygate store commands through --broker-admin', () => {
  it('bind, rotate, revoke, unrevoke, list, unbind go through the admin API (--key mints per call), each audited on the broker', async () => {
    const via = ['--broker-admin', broker.adminUrl!, '--key', keyFile];
    let r = await cli(['bind', 'api-key', '--pcr0', P('a'), '--pcr1', P('b'), '--pcr2', P('c'), '--value-stdin', ...via], VALUE);
    expect(r.stderr).toBe('');
    expect([r.status, r.stdout]).toEqual([0, expect.stringContaining('bound api-key version 1')]);
    r = await cli(['rotate', 'api-key', '--value-stdin', ...via], `${VALUE}-2`);
    expect([r.status, r.stdout]).toEqual([0, expect.stringContaining('rotated api-key to version 2')]);
    r = await cli(['revoke', 'api-key', ...via]);
    expect(r.status).toBe(0);
    expect(broker.store.snapshot().bindings.get('api-key')!.revoked).toBe(true);
    r = await cli(['unrevoke', 'api-key', ...via]);
    expect(r.status).toBe(0);
    expect(broker.store.snapshot().bindings.get('api-key')!.revoked).toBe(false);
    r = await cli(['list', ...via]);
    expect(r.status).toBe(0);
    expect((JSON.parse(r.stdout) as { bindings: Array<{ secret: string; version: number }> }).bindings.map((b) => [b.secret, b.version])).toEqual([['api-key', 2]]);
    r = await cli(['unbind', 'api-key', ...via]);
    expect(r.status).toBe(0);
    expect(broker.store.snapshot().bindings.has('api-key')).toBe(false);
    await broker.audit.close().catch(() => undefined);
    const audit = await readFile(join(dir, 'b', 'state', 'audit.jsonl'), 'utf8');
    const actions = audit.trim().split('\n').map((l) => JSON.parse(l) as { type: string; action?: string }).filter((x) => x.type === 'admin' && (x as { outcome?: string }).outcome !== 'pending').map((x) => x.action);
    expect(actions).toEqual(['bind', 'rotate', 'revoke-secret', 'unrevoke-secret', 'list', 'unbind']);
    expect(audit).not.toContain(VALUE);
    expect(audit).not.toContain(Buffer.from(VALUE).toString('base64'));
  });

  it('keygate admin token mints a single-use token; a second use is refused with UNAUTHORIZED (TOKEN_REPLAYED); a missing scope with FORBIDDEN', async () => {
    const minted = await cli(['admin', 'token', '--key', keyFile, '--scope', 'secrets:read', '--ttl', '60s']);
    expect(minted.status).toBe(0);
    const token = minted.stdout.trim();
    expect(token.split('.')).toHaveLength(3);
    // The broker of the first test closed its audit: use a fresh one.
    const b2 = await startTestBroker(join(dir, 'b2'), [], { adminListen: '127.0.0.1:0', adminApiKeys: [join(dir, 'admin-api.pub.jwk')] });
    try {
      const first = await cli(['list', '--broker-admin', b2.adminUrl!, '--token', token]);
      expect(first.status).toBe(0);
      const again = await cli(['list', '--broker-admin', b2.adminUrl!, '--token', token]);
      expect(again.status).toBe(2);
      expect(again.stderr).toContain('UNAUTHORIZED (TOKEN_REPLAYED)');
      const wrongScope = (await cli(['admin', 'token', '--key', keyFile, '--scope', 'audit:read'])).stdout.trim();
      const denied = await cli(['revoke', 'x', '--broker-admin', b2.adminUrl!, '--token', wrongScope]);
      expect(denied.status).toBe(2);
      expect(denied.stderr).toContain('FORBIDDEN (SCOPE_MISSING)');
      const tooLong = await cli(['admin', 'token', '--key', keyFile, '--scope', 'audit:read', '--ttl', '10m']);
      expect(tooLong.status).toBe(2);
    } finally {
      await b2.close();
    }
  });

  it('baseline put and approve (signed locally, --token) and admin audit-head go through the admin API', async () => {
    expect((await cli(['keygen', '--out', 'approver.jwk'], undefined, dir)).status).toBe(0);
    const b3 = await startTestBroker(join(dir, 'b3'), [], { adminListen: '127.0.0.1:0', adminApiKeys: [join(dir, 'admin-api.pub.jwk')], adminKeys: [join(dir, 'approver.jwk.pub')] });
    try {
      await writeFile(join(dir, 'build.json'), JSON.stringify({ Measurements: { HashAlgorithm: 'Sha384 { ... }', PCR0: P('1'), PCR1: P('2'), PCR2: P('3') } }));
      expect((await cli(['record', '--nitro-cli-json', 'build.json', '--name', 'web-7'], undefined, dir)).status).toBe(0);
      const via = ['--broker-admin', b3.adminUrl!];
      let r = await cli(['baseline', 'put', 'pcr-baselines/web-7.json', ...via, '--key', keyFile], undefined, dir);
      expect([r.status, r.stderr]).toEqual([0, '']);
      expect(b3.store.snapshot().baselines.get('web-7')?.approvals).toEqual([]);
      const token = (await cli(['admin', 'token', '--key', keyFile, '--scope', 'baselines:approve'])).stdout.trim();
      r = await cli(['approve', 'web-7', '--key', 'approver.jwk', ...via, '--token', token], undefined, dir);
      expect([r.status, r.stderr]).toEqual([0, '']);
      expect(b3.store.snapshot().baselines.get('web-7')?.approvals).toHaveLength(1);
      r = await cli(['admin', 'audit-head', ...via, '--key', keyFile]);
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout)).toEqual({ seq: expect.any(Number), headHash: expect.stringMatching(/^[0-9a-f]{64}$/) });
    } finally {
      await b3.close();
    }
  });
});
