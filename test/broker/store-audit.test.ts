import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../../broker/audit/log.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import { verifyAuditLog } from '../../broker/audit/verify-log.js';
import { ChallengeService } from '../../broker/challenge.js';
import { MemoryNonceRegistry } from '../../broker/nonce/memory-registry.js';
import { Quarantine, RateLimiter } from '../../broker/rate-limit.js';
import { SecretCache } from '../../broker/secret-cache.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-store-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

// The store's behaviour (file and DynamoDB backends alike) is tested in store-behaviour.test.ts.

const key = generateKeyPairSync('ed25519');
const signer = { key: key.privateKey, kid: 'test' };
function record(i: number): DecisionRecord {
  return { time: new Date(0).toISOString(), decision: 'deny', code: 'PCR_MISMATCH', secret: `s${i}`, version: null, moduleId: null, pcrs: null, docSha256: null, nonce: null, client: '127.0.0.1', latencyMs: 1 };
}

describe('audit log', () => {
  it('batches concurrent appends under one seal and continues the chain after reopening', async () => {
    const file = join(dir, 'audit.jsonl');
    let log = await AuditLog.open(file, signer);
    await Promise.all(Array.from({ length: 20 }, (_, i) => log.append(record(i))));
    await log.close();
    let check = verifyAuditLog(readFileSync(file, 'utf8'), key.publicKey);
    expect(check).toMatchObject({ ok: true, decisions: 20, unsealed: 0 });
    expect(check.seals).toBeLessThan(5);
    log = await AuditLog.open(file, signer);
    await log.append(record(99));
    await log.close();
    check = verifyAuditLog(readFileSync(file, 'utf8'), key.publicKey);
    expect(check).toMatchObject({ ok: true, decisions: 21 });
  });

  it('cuts a torn last line left by a crash and keeps every durable record', async () => {
    const file = join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file, signer);
    for (let i = 0; i < 3; i++) await log.append(record(i));
    await log.close();
    appendFileSync(file, '{"seq":7,"prevHash":"ab'); // the write in flight when the process died
    const reopened = await AuditLog.open(file, signer);
    await reopened.append(record(3));
    await reopened.close();
    const check = verifyAuditLog(readFileSync(file, 'utf8'), key.publicKey);
    expect(check).toMatchObject({ ok: true, decisions: 4 });
  });

  it('detects a forged seal even when the attacker recomputes the hash chain', async () => {
    const file = join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file, signer);
    await log.append(record(1));
    await log.close();
    const other = generateKeyPairSync('ed25519');
    const forger = await AuditLog.open(join(dir, 'forged.jsonl'), { key: other.privateKey, kid: 'test' });
    await forger.append(record(1));
    await forger.close();
    const forged = readFileSync(join(dir, 'forged.jsonl'), 'utf8');
    expect(verifyAuditLog(forged, other.publicKey).ok).toBe(true);
    expect(verifyAuditLog(forged, key.publicKey).problem?.message).toMatch(/seal signature/);
  });
});

describe('challenge nonces', () => {
  const svc = (): ChallengeService => new ChallengeService(Buffer.alloc(32, 7), { ttlMs: 30_000 });
  /** check, then the registry: what the release path does. */
  const consume = async (s: ChallengeService, r: MemoryNonceRegistry, nonce: Uint8Array | null, now: number): Promise<string> => {
    const c = s.check(nonce, now);
    return c.ok ? r.consume(c.id, c.rememberUntil, now) : c.problem;
  };
  it('accepts a fresh nonce once, from any replica sharing the key', async () => {
    const a = svc();
    const b = svc();
    const { nonce, expiresAt } = a.issue(1_000_000);
    expect(nonce).toHaveLength(32);
    expect(expiresAt).toBe(1_030_000);
    const memB = new MemoryNonceRegistry(4);
    expect(await consume(b, memB, nonce, 1_000_500)).toBe('fresh');
    expect(await consume(b, memB, nonce, 1_000_600)).toBe('used');
    expect(await consume(a, new MemoryNonceRegistry(4), nonce, 1_000_600)).toBe('fresh'); // per-replica memory: the in-memory registry's limit
  });
  it('refuses forged, expired, future and malformed nonces (pure: no registry involved)', () => {
    const s = svc();
    const { nonce } = s.issue(1_000_000);
    const forged = Uint8Array.from(nonce);
    forged[31]! ^= 1;
    expect(s.check(forged, 1_000_001)).toEqual({ ok: false, problem: 'forged' });
    expect(new ChallengeService(Buffer.alloc(32, 8)).check(nonce, 1_000_001)).toEqual({ ok: false, problem: 'forged' });
    expect(s.check(nonce, 1_030_001)).toEqual({ ok: false, problem: 'expired' });
    expect(s.check(s.issue(2_000_000).nonce, 1_000_000)).toEqual({ ok: false, problem: 'expired' });
    expect(s.check(nonce.subarray(0, 31), 1_000_001)).toEqual({ ok: false, problem: 'malformed' });
    expect(s.check(null, 1_000_001)).toEqual({ ok: false, problem: 'malformed' });
    // Authentic: remembered until the lifetime plus the tolerated skew (default 5 s).
    expect(s.check(nonce, 1_000_001)).toEqual({ ok: true, id: Buffer.from(nonce).toString('hex'), rememberUntil: 1_035_000 });
  });
  it('keeps memory bounded: refuses when full of unexpired nonces, recovers after they expire', async () => {
    const s = svc();
    const r = new MemoryNonceRegistry(4);
    for (let i = 0; i < 4; i++) expect(await consume(s, r, s.issue(1_000_000).nonce, 1_000_000)).toBe('fresh');
    expect(await consume(s, r, s.issue(1_000_000).nonce, 1_000_000)).toBe('busy');
    expect(await consume(s, r, s.issue(1_100_000).nonce, 1_100_000)).toBe('fresh');
    expect(r.remembered).toBe(1);
  });
});

describe('abuse controls and value cache', () => {
  it('token buckets refill at their rate', () => {
    const r = new RateLimiter(2, 2);
    expect([r.take('a', 0), r.take('a', 0), r.take('a', 0)]).toEqual([true, true, false]);
    expect(r.take('b', 0)).toBe(true);
    expect(r.take('a', 500)).toBe(true);
    expect(new RateLimiter(0, 0).take('a', 0)).toBe(true);
  });
  it('quarantines after repeated denials within the window, then releases', () => {
    const q = new Quarantine(3, 1000, 5000);
    q.recordDenial('x', 0);
    q.recordDenial('x', 100);
    expect(q.isQuarantined('x', 200)).toBe(false);
    q.recordDenial('x', 200);
    expect(q.isQuarantined('x', 300)).toBe(true);
    expect(q.isQuarantined('x', 5300)).toBe(false);
    const slow = new Quarantine(3, 1000, 5000);
    for (const t of [0, 2000, 4000]) slow.recordDenial('y', t);
    expect(slow.isQuarantined('y', 4001)).toBe(false);
  });
  it('caches values for their TTL, drops changed bindings, and can be disabled', () => {
    const c = new SecretCache(1000, 2);
    const k = SecretCache.key('db', 1, 'ct');
    c.set(k, Uint8Array.of(1), 0);
    expect(c.get(k, 999)).toEqual(Uint8Array.of(1));
    expect(c.get(k, 1000)).toBeUndefined();
    c.set(k, Uint8Array.of(1), 0);
    c.retain(new Set([SecretCache.key('db', 2, 'ct2')]));
    expect(c.get(k, 1)).toBeUndefined();
    const off = new SecretCache(0);
    off.set(k, Uint8Array.of(1), 0);
    expect(off.get(k, 0)).toBeUndefined();
  });
});
