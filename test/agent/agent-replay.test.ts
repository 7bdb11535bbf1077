/**
 * The parent instance is the attacker: a relay between the enclave agent and
 * a real broker records a challenge and its answer and replays them later,
 * or serves answers signed with the broker's key but altered in one claim.
 * The agent must accept only answers bound to the document it produced for
 * this request, fresh on its own clock, and never a lower version.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, revokeSecret, rotateSecret } from '../../broker/admin.js';
import type { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { createAgent, type AgentOptions, type SecretAgent } from '../../enclave-agent/index.js';
import { startSimulatedBroker } from '../support/simulated-broker.js';
import type { AllowRule } from '../../broker/policy/types.js';
import { errorOf, manualClock as clock } from '../support/agent.js';
import { brokerSigned, ReplayRelay, type SeenRequest } from './replay-relay.js';

let dir: string;
let simulator: NsmSimulator;
let broker: RunningBroker;
let brokerKey: JWK;
let relay: ReplayRelay;
const agents: SecretAgent[] = [];

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);


async function agent(extra: Partial<AgentOptions> = {}): Promise<SecretAgent> {
  const a = await createAgent({ brokerUrl: relay.url, brokerKey, nsm: simulator.client(), timeoutMs: 20_000, ...extra });
  agents.push(a);
  return a;
}


beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-agent-replay-'));
  let allow: AllowRule[];
  ({ simulator, broker, allow, brokerKey } = await startSimulatedBroker(dir));
  const local = broker.providers.get('local')!;
  for (const secret of ['rotated', 'rotated-seen']) {
    await bindSecret(broker.store, local, { secret, value: enc(`${secret}-v1`), allow, provider: 'local', ttlSeconds: 30 });
  }
  relay = await ReplayRelay.start(broker.url);
});

afterAll(async () => {
  for (const a of agents) await a.close();
  await relay?.close();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('a relay replaying an old challenge and its answer', () => {
  it('is refused after the secret was rotated and revoked (the answer is bound to another document)', async () => {
    const c = clock();
    const a = await agent({ clock: c.now });
    relay.mode = 'forward';
    expect(await a.getSecret('rotated')).toBe('rotated-v1');
    const recorded = relay.recorded!;
    expect(recorded).toBeDefined();

    await rotateSecret(broker.store, broker.providers, 'rotated', enc('rotated-v2'));
    await revokeSecret(broker.store, 'rotated');
    c.advance(30_001); // past the TTL: the agent must ask again
    relay.mode = 'replay';
    try {
      const err = await errorOf(a.getSecret('rotated'));
      expect(err.code).toBe('UNTRUSTED_RESPONSE');
      expect(err.message).toMatch(/another attestation document/);
    } finally {
      relay.mode = 'forward';
    }
    // The agent did attest again, with the replayed (old) nonce: only the document binding tells the answers apart.
    const [first, second] = relay.seen.slice(-2);
    expect(second!.nonceHex).toBe(first!.nonceHex);
    expect(second!.documentSha256).not.toBe(first!.documentSha256);
    // Without the relay's help the broker says what is true now.
    expect((await errorOf(a.getSecret('rotated'))).code).toBe('POLICY_DENIED');
  });

  it('is refused after the agent has seen version 2', async () => {
    const c = clock();
    const a = await agent({ clock: c.now });
    relay.mode = 'forward';
    expect(await a.getSecret('rotated-seen')).toBe('rotated-seen-v1');
    const recorded = relay.recorded!;
    await rotateSecret(broker.store, broker.providers, 'rotated-seen', enc('rotated-seen-v2'));
    c.advance(30_001);
    expect(await a.getSecret('rotated-seen')).toBe('rotated-seen-v2');
    c.advance(30_001);
    relay.recorded = recorded;
    relay.mode = 'replay';
    try {
      expect((await errorOf(a.getSecret('rotated-seen'))).code).toBe('UNTRUSTED_RESPONSE');
    } finally {
      relay.mode = 'forward';
    }
  });
});

/** Claims exactly as the broker builds them for `seen`, then `change` applied. */
function claimsFor(seen: SeenRequest, change: Record<string, unknown> = {}, value = 'forged-ok'): Record<string, unknown> {
  const iat = Math.floor(Date.now() / 1000);
  return {
    iss: 'keygate',
    sub: seen.names[0],
    ver: 1,
    val: Buffer.from(value).toString('base64url'),
    text: true,
    iat,
    exp: iat + 60,
    ttl: 60,
    nonce: seen.nonceHex,
    doc: seen.documentSha256,
    aud: seen.moduleId,
    ...change,
  };
}

async function withForger<T>(forge: (seen: SeenRequest) => Record<string, unknown>, body: () => Promise<T>, version?: (claims: Record<string, unknown>) => unknown): Promise<T> {
  relay.forger = async (seen) => {
    const claims = forge(seen);
    const label = { name: seen.names[0]!, version: version ? version(claims) : claims.ver, ttlSeconds: 60 };
    return { secrets: [await brokerSigned(broker.signingKey, seen, claims, label)] };
  };
  relay.mode = 'forge';
  try {
    return await body();
  } finally {
    relay.mode = 'forward';
    relay.forger = undefined;
  }
}

describe('broker-signed answers with one claim altered', () => {
  it('an unaltered answer built by the test is accepted (so each refusal below is caused by its one claim)', async () => {
    const a = await agent();
    expect(await withForger((seen) => claimsFor(seen), () => a.getSecret('forged'))).toBe('forged-ok');
  });

  const now = (): number => Math.floor(Date.now() / 1000);
  const otherDoc = createHash('sha256').update('another document').digest('hex');
  const cases: Array<[string, string, (seen: SeenRequest) => Record<string, unknown>]> = [
    ['iss: another issuer', 'UNTRUSTED_RESPONSE', (s) => claimsFor(s, { iss: 'not-keygate' })],
    ['sub: another secret', 'UNTRUSTED_RESPONSE', (s) => claimsFor(s, { sub: 'other-secret' })],
    ['nonce: another challenge', 'UNTRUSTED_RESPONSE', (s) => claimsFor(s, { nonce: '00'.repeat(32) })],
    ['doc: another attestation document', 'UNTRUSTED_RESPONSE', (s) => claimsFor(s, { doc: otherDoc })],
    ['aud: another enclave', 'UNTRUSTED_RESPONSE', (s) => claimsFor(s, { aud: `${s.moduleId}-other` })],
    ['iat: an hour before the request', 'STALE_RESPONSE', (s) => claimsFor(s, { iat: now() - 3600 })],
    ['iat: an hour in the future', 'STALE_RESPONSE', (s) => claimsFor(s, { iat: now() + 3600 })],
    ['iat and exp: a whole consistent answer from an hour ago', 'STALE_RESPONSE', (s) => claimsFor(s, { iat: now() - 3600, exp: now() - 3600 + 60 })],
    ['exp: already passed', 'STALE_RESPONSE', (s) => claimsFor(s, { exp: now() - 1 })],
    ['exp: later than iat + ttl', 'BAD_RESPONSE', (s) => claimsFor(s, { exp: now() + 3600 })],
    ['ttl: zero', 'BAD_RESPONSE', (s) => claimsFor(s, { ttl: 0 })],
    ['ttl: longer than exp - iat', 'BAD_RESPONSE', (s) => claimsFor(s, { ttl: 3600 })],
    ['ttl: not an integer', 'BAD_RESPONSE', (s) => claimsFor(s, { ttl: 59.5 })],
    ['val: not base64url', 'BAD_RESPONSE', (s) => claimsFor(s, { val: 'not base64url!' })],
    ['val: not a string', 'BAD_RESPONSE', (s) => claimsFor(s, { val: 42 })],
    ['text: not a boolean', 'BAD_RESPONSE', (s) => claimsFor(s, { text: 'yes' })],
    ['text: true on a value that is not UTF-8', 'BAD_RESPONSE', (s) => claimsFor(s, { val: Buffer.from([0xff, 0xfe]).toString('base64url') })],
  ];

  it.each(cases)('%s -> %s', async (_what, code, forge) => {
    const a = await agent();
    const err = await withForger(forge, () => errorOf(a.getSecret('forged')));
    expect(err.code).toBe(code);
  });

  it('ver: differs from the version the item is labelled with -> UNTRUSTED_RESPONSE', async () => {
    const a = await agent();
    const err = await withForger((s) => claimsFor(s, { ver: 7 }), () => errorOf(a.getSecret('forged')), () => 1);
    expect(err.code).toBe('UNTRUSTED_RESPONSE');
  });

  it('ver: not a positive integer -> BAD_RESPONSE', async () => {
    const a = await agent();
    const err = await withForger((s) => claimsFor(s, { ver: 0 }), () => errorOf(a.getSecret('forged')));
    expect(err.code).toBe('BAD_RESPONSE');
  });
});

describe('exp and versions over time', () => {
  it('a cached value is not served past exp, even when ttl from the request start has not run out', async () => {
    const c = clock();
    const a = await agent({ clock: c.now });
    // Issued 50 s ago on the broker's clock (within the allowed skew): 10 s of life left.
    const issued = (s: SeenRequest): Record<string, unknown> => claimsFor(s, { iat: Math.floor(Date.now() / 1000) - 50, exp: Math.floor(Date.now() / 1000) + 10 });
    await withForger(issued, async () => {
      expect(await a.getSecret('short-lived')).toBe('forged-ok');
      c.advance(15_000);
      expect(await a.getSecret('short-lived')).toBe('forged-ok');
    });
    expect(a.stats.attestations).toBe(2);
  });

  it('a version lower than one already accepted is refused as VERSION_ROLLBACK, by every agent of the process', async () => {
    const c = clock();
    const a = await agent({ clock: c.now });
    let ver = 2;
    await withForger(
      (s) => claimsFor(s, { ver }, `value-${ver}`),
      async () => {
        expect(await a.getSecret('rolled-back')).toBe('value-2');
        c.advance(60_001);
        ver = 1;
        expect((await errorOf(a.getSecret('rolled-back'))).code).toBe('VERSION_ROLLBACK');
        const b = await agent();
        expect((await errorOf(b.getSecret('rolled-back'))).code).toBe('VERSION_ROLLBACK');
        ver = 2;
        expect(await a.getSecret('rolled-back')).toBe('value-2');
        c.advance(60_001);
        ver = 3;
        expect(await a.getSecret('rolled-back')).toBe('value-3');
      },
    );
  });
});
