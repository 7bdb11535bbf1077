/** Abuse controls through the real HTTP API: per-client rate limit and quarantine after repeated denials. */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { startTestBroker, NO_RATE_LIMITS } from '../support/broker.js';
import { testBrokers } from '../support/test-brokers.js';
import { APPROVED, TestEnclave, buildPcrs } from '../support/enclave.js';

const fleet = testBrokers('keygate-abuse-');

async function broker(name: string, rateLimits: Partial<typeof NO_RATE_LIMITS>): Promise<RunningBroker> {
  const b = await startTestBroker(join(fleet.dir, name), [fleet.pki.root.pem], { rateLimits: { ...NO_RATE_LIMITS, ...rateLimits } });
  fleet.add(b);
  await bindSecret(b.store, b.providers.get('local')!, { secret: 'db', value: new TextEncoder().encode('v'), allow: [pcrSet(APPROVED)], provider: 'local' });
  return b;
}

describe('abuse controls', () => {
  it('quarantines an enclave identity after repeated denials, even for secrets it may read', async () => {
    const b = await broker('quarantine', { quarantineAfterDenials: 3, quarantineWindowSeconds: 60, quarantineSeconds: 300 });
    const enclave = new TestEnclave(fleet.pki, b.url);
    expect((await enclave.request(['db'])).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await enclave.request([`probe-${i}`])).body.error?.code).toBe('POLICY_DENIED');
    const blocked = await enclave.request(['db']);
    expect(blocked.status).toBe(429);
    expect(blocked.body.error?.code).toBe('QUARANTINED');
    // Another identity (another PCR0) is unaffected.
    const other = new TestEnclave(fleet.pki, b.url, buildPcrs(0x12));
    expect((await other.request(['db'])).body.error?.code).toBe('POLICY_DENIED');
    const audit = readFileSync(join(fleet.dir, 'quarantine', 'state', 'audit.jsonl'), 'utf8');
    expect(audit).toContain('"code":"QUARANTINED"');
  });

  it('rate-limits a client that sends too many requests', async () => {
    const b = await broker('ratelimit', { perClientPerSecond: 1 }); // burst of 2
    const enclave = new TestEnclave(fleet.pki, b.url);
    const codes: Array<string | undefined> = [];
    for (let i = 0; i < 4; i++) codes.push((await enclave.request(['db'])).body.error?.code);
    expect(codes.slice(0, 2)).toEqual([undefined, undefined]);
    expect(codes.slice(2)).toContain('RATE_LIMITED');
  });

  it('rate-limits one enclave identity without affecting others', async () => {
    const b = await broker('identity', { perIdentityPerSecond: 1 });
    const noisy = new TestEnclave(fleet.pki, b.url);
    const results = [];
    for (let i = 0; i < 4; i++) results.push((await noisy.request(['db'])).status);
    expect(results).toContain(429);
    const other = new TestEnclave(fleet.pki, b.url, buildPcrs(0x13));
    expect((await other.request(['db'])).body.error?.code).toBe('POLICY_DENIED'); // not RATE_LIMITED
  });
});
