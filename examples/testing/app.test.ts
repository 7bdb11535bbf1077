// app.test.ts: the enclave app's own tests, run by vitest on any machine (no Nitro, no AWS).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SecretAgent } from 'keygate/agent';
import { startTestKit, type TestKit } from 'keygate/testing';

// The code under test takes its agent as a parameter: in the enclave it is
// createAgent({ brokerKey, nsm: openNsmDevice(), transport }), here the kit's.
async function databaseUrl(agent: SecretAgent): Promise<string> {
  const password = await agent.getSecret('db-password');
  if (typeof password !== 'string') throw new Error('db-password must be text');
  return `postgres://app:${encodeURIComponent(password)}@db.internal:5432/app`;
}

let kit: TestKit;

beforeAll(async () => {
  // A broker on 127.0.0.1 trusting a simulated NSM, its store in a temporary directory.
  kit = await startTestKit();
  await kit.bind('db-password', 'hunter2'); // bound to the simulated enclave's PCR0/1/2
});

afterAll(async () => {
  await kit.close(); // closes the broker and agents, removes the temporary directory
});

describe('my enclave app', () => {
  it('builds its database URL from the secret keygate releases to it', async () => {
    const agent = await kit.agent();
    expect(await databaseUrl(agent)).toBe('postgres://app:hunter2@db.internal:5432/app');
  });

  it('is refused a secret bound to another enclave image', async () => {
    await kit.bind('payments-key', 'pk-live', { pcrs: { 0: 'ab'.repeat(48), 1: kit.pcrs[1], 2: kit.pcrs[2] } });
    const agent = await kit.agent();
    await expect(agent.getSecret('payments-key')).rejects.toMatchObject({ name: 'AgentError', code: 'POLICY_DENIED' });
  });
});
