/**
 * The delegation registry of a file store (broker/delegation/file-delegations.ts) on its own: uses never
 * exceed maxUses under concurrent takers (two handles, as the broker and a CLI would hold), revocation
 * is seen by the other handle at once, and expired records are pruned so the directory stays bounded.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openDelegationRegistry } from '../../broker/delegation/open-delegations.js';
import type { DelegationRecord } from '../../broker/delegation/registry.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-deleg-registry-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const record = (over: Partial<DelegationRecord> = {}): DelegationRecord => ({
  id: randomBytes(16).toString('base64url'),
  parent: { moduleId: 'i-0123456789abcdef0-enc0000000000000001', pcr0: '11'.repeat(48) },
  from: null,
  depth: 1,
  names: ['db'],
  iat: 1_000,
  exp: 2_000,
  maxUses: 3,
  aud: { baseline: 'sub-build' },
  uses: 0,
  revoked: false,
  ...over,
});

describe('file delegation registry', () => {
  it('concurrent takers on two handles get exactly maxUses; a revocation through one is seen by the other', async () => {
    const [a, b] = [await openDelegationRegistry(dir), await openDelegationRegistry(dir)];
    const r = record({ maxUses: 5 });
    await a.create(r);
    const outcomes = await Promise.all(Array.from({ length: 12 }, (_, i) => (i % 2 ? a : b).use(r.id, 1, 1_500)));
    expect(outcomes.filter((o) => o === 'ok')).toHaveLength(5);
    expect(outcomes.filter((o) => o !== 'ok')).toEqual(Array(7).fill('exhausted'));
    const r2 = record();
    await a.create(r2);
    expect(await b.use(r2.id, 2, 1_500)).toBe('ok');
    expect(await b.use(r2.id, 2, 1_500)).toBe('exhausted'); // 2 + 2 > 3: a reservation is all or nothing
    expect(await a.revoke(r2.id)).toBe(true);
    expect(await b.use(r2.id, 1, 1_500)).toBe('revoked');
    expect(await b.use(r2.id, 1, 2_000)).toBe('revoked');
    expect(await a.use(record().id, 1, 1_500)).toBe('unknown');
    expect(await a.revoke(record().id)).toBe(false);
    const r3 = record();
    await a.create(r3);
    expect(await a.use(r3.id, 1, 2_000)).toBe('expired');
  });

  it('prunes records a day past their expiry as delegations are created', async () => {
    const reg = await openDelegationRegistry(dir);
    const old = record({ iat: 1_000, exp: 2_000 });
    await reg.create(old);
    const now = 2_000 + 86_400 + 1;
    for (let i = 0; i < 127; i++) await reg.create(record({ iat: now, exp: now + 60 }));
    expect(existsSync(join(dir, 'delegations', `${old.id}.json`))).toBe(false);
    expect((await reg.list()).records).toHaveLength(127);
  }, 60_000);
});

describe('the delegation config setting', () => {
  it('defaults to maxTtlSeconds 3600, maxDepth 2, maxUses 1000; partial settings keep the other defaults; bad ones are refused', async () => {
    const { resolveConfig, ConfigError } = await import('../../broker/config.js');
    expect(resolveConfig({}).delegation).toEqual({ maxTtlSeconds: 3600, maxDepth: 2, maxUses: 1000 });
    expect(resolveConfig({ delegation: { maxDepth: 1 } as never }).delegation).toEqual({ maxTtlSeconds: 3600, maxDepth: 1, maxUses: 1000 });
    for (const bad of [{ maxDepth: 0 }, { maxDepth: 9 }, { maxTtlSeconds: 86_401 }, { maxUses: 0 }, { maxUses: 1.5 }, { depth: 2 }, null, []]) {
      expect(() => resolveConfig({ delegation: bad as never }), JSON.stringify(bad)).toThrow(ConfigError);
    }
  });
});
