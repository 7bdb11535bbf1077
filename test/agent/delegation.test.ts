/**
 * Delegation through the enclave agent (issue 14): a parent agent delegates with `agent.delegate`,
 * a sub-agent (another simulated enclave image) reads through `createAgent({ delegation })` and can
 * check who its parent is with `agent.parentOf`; refusals surface as typed AgentErrors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBroker } from '../support/broker.js';
import { errorOf } from '../support/agent.js';
import { bindSecret, pcrSet, revokeIdentities } from '../../broker/admin.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { createAgent, type AgentOptions, type SecretAgent } from '../../enclave-agent/index.js';
import { h } from '../support/enclave.js';
import type { PcrValues } from '../../lib/pcrs.js';

let dir: string;
let parentNsm: NsmSimulator;
let subNsm: NsmSimulator;
let strangerNsm: NsmSimulator;
let broker: RunningBroker;
let brokerKey: JWK;
const agents: SecretAgent[] = [];

const SUB: PcrValues = { 0: h(0x44), 1: h(0x45), 2: h(0x46) };
const STRANGER: PcrValues = { 0: h(0x54), 1: h(0x45), 2: h(0x46) };
const imageOf = (p: PcrValues): { pcrs: { 0: string; 1: string; 2: string } } => ({ pcrs: { 0: p[0]!, 1: p[1]!, 2: p[2]! } });

async function agent(nsm: NsmSimulator, extra: Partial<AgentOptions> = {}): Promise<SecretAgent> {
  const a = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: nsm.client(), ...extra });
  agents.push(a);
  return a;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-agent-delegation-'));
  parentNsm = await NsmSimulator.create({ warn: () => {} });
  subNsm = await parentNsm.sibling({ pcrs: SUB, instanceId: 'i-0de0000000000000b' });
  strangerNsm = await parentNsm.sibling({ pcrs: STRANGER, instanceId: 'i-0de0000000000000c' });
  broker = await startTestBroker(dir, [parentNsm.rootPem]);
  const p = parentNsm.pcrs;
  const local = broker.providers.get('local')!;
  for (const [secret, value] of [['db-password', 'hunter2'], ['api-key', 'ak-1'], ['root-only', 'r']] as const) {
    await bindSecret(broker.store, local, { secret, value: new TextEncoder().encode(value), allow: [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })], provider: 'local', ttlSeconds: 60 });
  }
  brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
});

afterAll(async () => {
  for (const a of agents) await a.close();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('agent.delegate and a sub-agent', () => {
  it('the sub-agent reads exactly the delegated names with its own attestation; others are refused with typed errors', async () => {
    const parent = await agent(parentNsm);
    const d = await parent.delegate({ names: ['db-password'], ttl: 30, audience: imageOf(SUB), maxUses: 2 });
    expect(d).toMatchObject({ id: expect.any(String), exp: expect.any(Number), claims: { names: ['db-password'], maxUses: 2, depth: 1 } });

    // Without the delegation the sub-agent's image may read nothing.
    expect((await errorOf((await agent(subNsm)).getSecret('db-password'))).code).toBe('POLICY_DENIED');
    const child = await agent(subNsm, { delegation: d.token });
    expect(await child.getSecret('db-password')).toBe('hunter2');
    expect((await errorOf(child.getSecret('api-key'))).code).toBe('DELEGATION_NOT_ALLOWED');
    // Another image holding the token: AUDIENCE_MISMATCH.
    expect((await errorOf((await agent(strangerNsm, { delegation: d.token })).getSecret('db-password'))).code).toBe('AUDIENCE_MISMATCH');
    // Uses: one was taken; a second agent of the sub image takes the last; the next is refused.
    expect(await (await agent(subNsm, { delegation: d.token })).getSecret('db-password')).toBe('hunter2');
    expect((await errorOf((await agent(subNsm, { delegation: d.token })).getSecret('db-password'))).code).toBe('DELEGATION_EXHAUSTED');
  });

  it('the sub-agent verifies its parent with the pinned broker key, and refuses an unexpected one (PARENT_MISMATCH)', async () => {
    const parent = await agent(parentNsm);
    const d = await parent.delegate({ names: ['api-key'], ttl: 20, audience: imageOf(SUB), maxUses: 1 });
    const child = await agent(subNsm, { delegation: d.token });
    const p = parentNsm.pcrs;
    const who = await child.parentOf(d.token, { pcrs: { 0: p[0]!, 1: p[1]!, 2: p[2]! } });
    expect(who).toMatchObject({ id: d.id, names: ['api-key'], depth: 1, parent: { pcrs: expect.objectContaining({ 0: p[0] }), debug: false } });
    expect(who.parent.moduleId).toMatch(/^i-0de0000000000000a-enc/);
    expect((await errorOf(child.parentOf(d.token, { pcrs: { 0: STRANGER[0]! } }))).code).toBe('PARENT_MISMATCH');
    // A token altered (or not from the pinned broker) is not believed.
    const [head, payload, sig] = d.token.split('.');
    const altered = `${head}.${Buffer.from(Buffer.from(payload!, 'base64url').toString().replace('api-key', 'root-only')).toString('base64url')}.${sig}`;
    expect((await errorOf(child.parentOf(altered))).code).toBe('UNTRUSTED_RESPONSE');
  });

  it('a sub-agent delegates further from its own delegation (narrower); its child reads; revoking the root parent stops both', async () => {
    const parent = await agent(parentNsm);
    const d1 = await parent.delegate({ names: ['db-password', 'api-key'], ttl: 40, audience: imageOf(SUB), maxUses: 10 });
    const child = await agent(subNsm, { delegation: d1.token });
    const d2 = await child.delegate({ names: ['api-key'], ttl: 20, audience: imageOf(STRANGER), maxUses: 3 });
    expect(d2.claims).toMatchObject({ depth: 2, parents: [d1.id] });
    expect((await child.parentOf(d2.token)).chain.map((s) => s.pcrs[0])).toEqual([parentNsm.pcrs[0], SUB[0]]);
    // Widening refused, as a typed error.
    expect((await errorOf(child.delegate({ names: ['root-only'], ttl: 10, audience: imageOf(STRANGER), maxUses: 1 }))).code).toBe('DELEGATION_NOT_ALLOWED');
    const grandchild = await agent(strangerNsm, { delegation: d2.token });
    expect(await grandchild.getSecret('api-key')).toBe('ak-1');

    // Last test of the file: the parent's image stays revoked.
    await revokeIdentities(broker.store, { pcr0: [parentNsm.pcrs[0]!] });
    expect((await errorOf((await agent(subNsm, { delegation: d1.token })).getSecret('api-key'))).code).toBe('REVOKED');
    expect((await errorOf((await agent(strangerNsm, { delegation: d2.token })).getSecret('api-key'))).code).toBe('REVOKED');
  });
});
