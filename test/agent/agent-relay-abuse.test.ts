/**
 * A relay (the parent instance) cannot hang the agent past its deadline,
 * cannot get a value out of a closed agent, and cannot make an unauthenticated
 * error body pass for one of the agent's own verification verdicts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server, type Socket } from 'node:net';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret } from '../../broker/admin.js';
import type { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import type { Nsm } from '../../vsock-shim/nsm/client.js';
import { createAgent, type AgentOptions, type SecretAgent } from '../../enclave-agent/index.js';
import { startSimulatedBroker } from '../support/simulated-broker.js';
import type { AllowRule } from '../../broker/policy/types.js';
import { errorOf } from '../support/agent.js';

let dir: string;
let simulator: NsmSimulator;
let broker: RunningBroker;
let brokerKey: JWK;
const agents: SecretAgent[] = [];
const servers: Server[] = [];
const sockets = new Set<Socket>();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-relay-abuse-'));
  let allow: AllowRule[];
  ({ simulator, broker, allow, brokerKey } = await startSimulatedBroker(dir));
  await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'db', value: new TextEncoder().encode('db-v1'), allow, provider: 'local' });
});

afterAll(async () => {
  for (const a of agents) await a.close().catch(() => {});
  for (const s of sockets) s.destroy();
  for (const s of servers) await new Promise((r) => s.close(r));
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function agent(options: Partial<AgentOptions> & Pick<AgentOptions, 'brokerUrl'>): Promise<SecretAgent> {
  const a = await createAgent({ brokerKey, nsm: simulator.client(), ...options });
  agents.push(a);
  return a;
}

/** A raw TCP "broker" run by the relay: `onRequest` writes whatever it likes on each connection. */
async function relayServer(onRequest: (socket: Socket) => void): Promise<string> {
  const server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.once('data', () => onRequest(s));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

describe('a relay that answers one byte at a time', () => {
  it('cannot hold getSecret past timeoutMs: the deadline covers the whole answer, not socket idleness', async () => {
    const url = await relayServer((s) => {
      s.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n');
      const t = setInterval(() => (s.destroyed ? clearInterval(t) : s.write(' ')), 100);
      s.once('close', () => clearInterval(t));
    });
    const a = await agent({ brokerUrl: url, timeoutMs: 1_000 });
    const started = Date.now();
    const err = await errorOf(a.getSecret('db'));
    expect(err.code).toBe('BROKER_UNREACHABLE');
    // Generous bound (a loaded machine): the trickle alone would go on for ~100 000 s.
    expect(Date.now() - started).toBeLessThan(20_000);
  }, 40_000);
});

describe('close() racing an in-flight fetch', () => {
  it('a value fetched after close() is neither returned nor cached', async () => {
    let entered!: () => void;
    const attesting = new Promise<void>((r) => (entered = r));
    let proceed!: () => void;
    const gate = new Promise<void>((r) => (proceed = r));
    const real = simulator.client();
    const nsm: Nsm = {
      attest: async (input) => {
        entered();
        await gate;
        return real.attest(input);
      },
      describePcr: (i) => real.describePcr(i),
      getRandom: () => real.getRandom(),
      close: () => real.close(),
    };
    const a = await agent({ brokerUrl: broker.url, nsm, timeoutMs: 20_000 });
    const pending = a.getSecret('db');
    await attesting;
    await a.close();
    proceed();
    expect((await errorOf(pending)).code).toBe('AGENT_CLOSED');
    expect((await errorOf(a.getSecret('db'))).code).toBe('AGENT_CLOSED');
    expect((await errorOf(a.getSecrets(['db']))).code).toBe('AGENT_CLOSED');
  }, 40_000);
});

describe('unauthenticated error bodies', () => {
  const answer = (code: string, message: string) => (s: Socket): void => {
    const body = JSON.stringify({ error: { code, message } });
    s.end(`HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  };

  it.each(['VERSION_ROLLBACK', 'UNTRUSTED_RESPONSE', 'STALE_RESPONSE', 'AGENT_CLOSED', 'NSM_ERROR', 'SOMETHING_ELSE'])('a relay answering code %s gets BAD_RESPONSE, not a verdict of its choosing', async (code) => {
    const a = await agent({ brokerUrl: await relayServer(answer(code, 'made up')), timeoutMs: 5_000 });
    const err = await errorOf(a.getSecret('db'));
    expect(err.code).toBe('BAD_RESPONSE');
  });

  it('a broker code passes through, with control characters taken out of its message', async () => {
    const a = await agent({ brokerUrl: await relayServer(answer('POLICY_DENIED', 'denied\nFAKE LOG LINE\u001b[31m')), timeoutMs: 5_000 });
    const err = await errorOf(a.getSecret('db'));
    expect(err.code).toBe('POLICY_DENIED');
    expect(err.message).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(err.message).toContain('FAKE LOG LINE');
  });
});
