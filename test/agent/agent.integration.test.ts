/**
 * The enclave agent against a real broker on 127.0.0.1, with the NSM
 * simulator as its /dev/nsm and a clock the test moves.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';
import { startSimulatedBroker } from '../support/simulated-broker.js';
import type { AllowRule } from '../../broker/policy/types.js';
import { errorOf, manualClock as clock } from '../support/agent.js';
import { bindSecret } from '../../broker/admin.js';
import type { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { NsmError } from '../../vsock-shim/nsm/messages.js';
import { tcpTransport, unixTransport } from '../../vsock-shim/transport/transport.js';
import { tunnelTransport } from '../../vsock-shim/transport/tunnel.js';
import { Forwarder, listenTcp } from '../../vsock-shim/forwarder.js';
import { createAgent, type AgentOptions, type SecretAgent } from '../../enclave-agent/index.js';

let dir: string;
let simulator: NsmSimulator;
let broker: RunningBroker;
let brokerKey: JWK;
const agents: SecretAgent[] = [];

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

async function agent(extra: Partial<AgentOptions> = {}): Promise<SecretAgent> {
  const a = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: simulator.client(), ...extra });
  agents.push(a);
  return a;
}



/** A broker on this test's store and state (so the same signing key); `listen` reuses an earlier broker's address. */
function startBrokerHere(listen = '127.0.0.1:0'): Promise<RunningBroker> {
  return startTestBroker(dir, [simulator.rootPem], { listen });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-agent-'));
  let allow: AllowRule[];
  ({ simulator, broker, allow, brokerKey } = await startSimulatedBroker(dir));
  const local = broker.providers.get('local')!;
  await bindSecret(broker.store, local, { secret: 'db-password', value: enc('hunter2'), allow, provider: 'local', ttlSeconds: 60 });
  await bindSecret(broker.store, local, { secret: 'api-key', value: enc('ak-1'), allow, provider: 'local', ttlSeconds: 30 });
  await bindSecret(broker.store, local, { secret: 'signing-key', value: Uint8Array.of(0, 255, 1, 254), allow, provider: 'local' });
});

afterAll(async () => {
  for (const a of agents) await a.close();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

function releases(): Array<{ nonce: string; docSha256: string; secret: string }> {
  return readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; decision: string; nonce: string; docSha256: string; secret: string })
    .filter((r) => r.type === 'decision' && r.decision === 'release');
}

describe('getSecret', () => {
  it('fetches, caches, and serves text and binary values', async () => {
    const a = await agent();
    expect(await a.getSecret('db-password')).toBe('hunter2');
    expect(a.stats).toMatchObject({ attestations: 1, misses: 1, hits: 0 });
    expect(await a.getSecret('db-password')).toBe('hunter2');
    expect(a.stats).toMatchObject({ attestations: 1, hits: 1 });
    expect(await a.getSecret('signing-key')).toEqual(Uint8Array.of(0, 255, 1, 254));
  });

  it('fetches several names with one attestation', async () => {
    const a = await agent();
    expect(await a.getSecrets(['db-password', 'api-key'])).toEqual({ 'db-password': 'hunter2', 'api-key': 'ak-1' });
    expect(a.stats.attestations).toBe(1);
  });

  it('lets concurrent callers share one request (single flight)', async () => {
    const a = await agent();
    const values = await Promise.all(Array.from({ length: 20 }, () => a.getSecret('db-password')));
    expect(new Set(values)).toEqual(new Set(['hunter2']));
    expect(a.stats.attestations).toBe(1);
  });

  it('re-attests when the TTL expires: a new nonce and a new document', async () => {
    const c = clock();
    const a = await agent({ clock: c.now });
    const before = releases().length;
    await a.getSecret('api-key');
    c.advance(30_001);
    expect(await a.getSecret('api-key')).toBe('ak-1');
    expect(a.stats.attestations).toBe(2);
    const [first, second] = releases().slice(before);
    expect(first!.nonce).not.toBe(second!.nonce);
    expect(first!.docSha256).not.toBe(second!.docSha256);
  });

  it('refreshes ahead of expiry in the background while serving the cached value', async () => {
    const c = clock();
    const a = await agent({ clock: c.now });
    await a.getSecret('api-key');
    c.advance(25_000); // past 75 % of 30 s
    expect(await a.getSecret('api-key')).toBe('ak-1');
    expect(a.stats.backgroundRefreshes).toBe(1);
    await expect.poll(() => a.stats.attestations, { timeout: 10_000 }).toBe(2);
    c.advance(20_000); // 45 s after the first fetch, 20 s after the refresh: still fresh
    expect(await a.getSecret('api-key')).toBe('ak-1');
    expect(a.stats.attestations).toBe(2);
  });

  it('a changed PCR0 gets nothing', async () => {
    const other = await simulator.sibling({ pcrs: { 0: 'cd'.repeat(48) } });
    const a = await agent({ nsm: other.client() });
    const err = await errorOf(a.getSecret('db-password'));
    expect(err.code).toBe('POLICY_DENIED');
    const debug = await simulator.sibling({ debug: true });
    expect((await errorOf((await agent({ nsm: debug.client() })).getSecret('db-password'))).code).toBe('DEBUG_MODE');
  });

  it('refuses answers not signed by the pinned broker key', async () => {
    const { generateKeyPairSync } = await import('node:crypto');
    const wrong = { ...generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }), alg: 'EdDSA' } as JWK;
    const a = await agent({ brokerKey: wrong });
    expect((await errorOf(a.getSecret('db-password'))).code).toBe('UNTRUSTED_RESPONSE');
  });

  it('reports NSM failures as NSM_ERROR', async () => {
    const a = await agent({ nsm: { attest: () => Promise.reject(new NsmError('NSM_UNAVAILABLE', 'no /dev/nsm')), describePcr: () => Promise.reject(new Error()), getRandom: () => Promise.reject(new Error()), close: async () => {} } });
    expect((await errorOf(a.getSecret('db-password'))).code).toBe('NSM_ERROR');
  });

  it('works over a Unix socket transport', async () => {
    const path = join(dir, 'broker.sock');
    const port = Number(new URL(broker.url).port);
    const relay: Server = createServer((s) => s.pipe(connect(port, '127.0.0.1')).pipe(s));
    await new Promise<void>((r) => relay.listen(path, r));
    try {
      const a = await agent({ transport: unixTransport(path) });
      expect(await a.getSecret('db-password')).toBe('hunter2');
      await a.close();
    } finally {
      relay.close();
    }
  });
});

describe('through the parent forwarder', () => {
  it('reaches the broker over a CONNECT tunnel, as it would over vsock', async () => {
    const brokerPort = Number(new URL(broker.url).port);
    const forwarder = new Forwarder({ allow: [{ host: '127.0.0.1', port: brokerPort }] });
    const listener = await listenTcp(forwarder, '127.0.0.1', 0);
    try {
      const a = await agent({ transport: tunnelTransport(tcpTransport('127.0.0.1', listener.port), `127.0.0.1:${brokerPort}`) });
      expect(await a.getSecret('db-password')).toBe('hunter2');
      expect(forwarder.stats.relayed).toBeGreaterThanOrEqual(1);
      const blocked = await agent({ transport: tunnelTransport(tcpTransport('127.0.0.1', listener.port), '127.0.0.1:1') });
      expect((await errorOf(blocked.getSecret('db-password'))).code).toBe('BROKER_UNREACHABLE');
      await a.close();
      await blocked.close();
    } finally {
      await listener.close();
    }
  });
});

describe('broker outage', () => {
  it('serves the cache until hard expiry, then fails with a typed error; recovers when the broker returns', async () => {
    const c = clock();
    const a = await agent({ clock: c.now, timeoutMs: 2_000 });
    expect(await a.getSecret('db-password')).toBe('hunter2');
    const address = new URL(broker.url).host;
    await broker.close();
    c.advance(50_000); // refresh-ahead window: background refresh fails, cached value still served
    expect(await a.getSecret('db-password')).toBe('hunter2');
    await expect.poll(() => a.stats.backgroundFailures, { timeout: 10_000 }).toBe(1);
    expect(a.stats.lastBackgroundError?.code).toBe('BROKER_UNREACHABLE');
    c.advance(10_001); // past the 60 s hard expiry
    expect((await errorOf(a.getSecret('db-password'))).code).toBe('BROKER_UNREACHABLE');

    // The broker comes back at the same address: the agent that saw it fail (stale pooled sockets, failed refreshes) must recover.
    broker = await startBrokerHere(address);
    expect(new URL(broker.url).host).toBe(address);
    const attestations = a.stats.attestations;
    expect(await a.getSecret('db-password')).toBe('hunter2');
    expect(a.stats.attestations).toBe(attestations + 1);
  });
});
