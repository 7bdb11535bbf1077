/**
 * Gateway call budgets (issue 13): the counter contract on both backends (memory, and DynamoDB with
 * conditional updates against moto_server, shared by replicas), fail-closed errors, and a broker whose
 * gateway counts in DynamoDB.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';
import { openBudgetCounter } from '../../broker/gateway/open-budget.js';
import { BudgetUnavailableError, type BudgetCounter } from '../../broker/gateway/budget.js';
import { initNonceTable } from '../../broker/nonce/open-registry.js';
import { awsOf, closedPort, motoTable, startMoto, uniqueName, type Moto } from '../support/moto.js';
import { startGatewayFixture } from '../support/gateway.js';
import { errorOf } from '../support/agent.js';

let moto: Moto;
beforeAll(async () => {
  moto = await startMoto();
}, 120_000);
afterAll(async () => {
  await moto?.stop();
});

const dynamo = (table: string) => motoTable(moto, table);

interface Backend {
  readonly name: string;
  /** `n` counters sharing one state: the replicas of one deployment. */
  replicas(n: number): Promise<BudgetCounter[]>;
}

const backends: Backend[] = [
  { name: 'memory', replicas: async (n) => { const one = await openBudgetCounter({ kind: 'memory' }); return Array.from({ length: n }, () => one); } },
  {
    name: 'dynamodb',
    replicas: async (n) => {
      const settings = dynamo(uniqueName('budgets'));
      await initNonceTable(settings); // a pk-only table: the nonce table can hold the budgets too
      return Promise.all(Array.from({ length: n }, () => openBudgetCounter(settings)));
    },
  },
];

describe.each(backends)('budget counter contract: $name', (backend) => {
  it('counts up to the limit per key and window, then refuses; other keys and the next window start afresh', async () => {
    const [c] = await backend.replicas(1);
    const got = [];
    for (let i = 0; i < 4; i++) got.push(await c!.take('k1', 60_000, 60_000, 3));
    expect(got).toEqual([true, true, true, false]);
    expect(await c!.take('k2', 60_000, 60_000, 3)).toBe(true);
    expect(await c!.take('k1', 120_000, 60_000, 3)).toBe(true);
  });

  it('concurrent calls on several replicas: exactly `limit` are counted', async () => {
    const replicas = await backend.replicas(3);
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => replicas[i % 3]!.take('race', 0, 60_000, 5)));
    expect(results.filter(Boolean)).toHaveLength(5);
  });
});

describe('DynamoDB budgets', () => {
  it('items live under budget#... keys (never the store table\'s pk = "store" partition)', async () => {
    const settings = dynamo(uniqueName('budgets'));
    await initNonceTable(settings);
    const c = await openBudgetCounter(settings);
    await c.take('openai#abc|i-1', 0, 60_000, 5);
    const ddb = new DynamoDBClient(awsOf(moto));
    const items = (await ddb.send(new ScanCommand({ TableName: settings.table }))).Items ?? [];
    expect(items.map((i) => i.pk?.S)).toEqual(['budget#openai#abc|i-1#0']);
    expect(items[0]!.n?.N).toBe('1');
    ddb.destroy();
    c.close();
  });

  it('unreachable DynamoDB or a missing table: BUDGET_UNAVAILABLE, never counted as allowed', async () => {
    const down = await openBudgetCounter({ kind: 'dynamodb', table: 'budgets-x', ...awsOf(moto), endpoint: `http://127.0.0.1:${await closedPort()}`, maxAttempts: 1, requestTimeoutMs: 5_000 });
    const missing = await openBudgetCounter(dynamo(uniqueName('missing')));
    for (const c of [down, missing]) {
      const err = await c.take('k', 0, 60_000, 5).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BudgetUnavailableError);
      expect((err as BudgetUnavailableError).code).toBe('BUDGET_UNAVAILABLE');
      c.close();
    }
  });

  it('a broker whose gateway counts in DynamoDB: over budget is BUDGET_EXCEEDED; an unreachable table refuses calls (STORE_UNAVAILABLE)', async () => {
    const settings = dynamo(uniqueName('budgets'));
    await initNonceTable(settings);
    const fx = await startGatewayFixture({}, { budgets: settings });
    try {
      await fx.bind('two', 'sk-two', { budget: { requests: 2, windowSeconds: 3600 } });
      const a = await fx.agent();
      for (let i = 0; i < 2; i++) expect((await a.fetch('two', '/v1/x', { method: 'POST', body: '{}' })).status).toBe(200);
      expect((await errorOf(a.fetch('two', '/v1/x', { method: 'POST', body: '{}' }))).code).toBe('BUDGET_EXCEEDED');
    } finally {
      await fx.close();
    }
    const broken = await startGatewayFixture({}, { budgets: { ...dynamo(uniqueName('absent')), maxAttempts: 1 } });
    try {
      await broken.bind('one', 'sk-one');
      const a = await broken.agent();
      expect((await errorOf(a.fetch('one', '/v1/x', { method: 'POST', body: '{}' }))).code).toBe('STORE_UNAVAILABLE');
      expect(broken.seen).toEqual([]);
    } finally {
      await broken.close();
    }
  });
});
