/**
 * Gateway tokens expire on the broker's clock (at most the binding's TTL): a call with an expired token is
 * refused (GATEWAY_TOKEN_INVALID, audited) and the agent re-attests for a new token and sends the call again.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startGatewayFixture, type GatewayFixture } from '../support/gateway.js';

let fx: GatewayFixture;
let offset = 0;
beforeAll(async () => {
  fx = await startGatewayFixture({}, {}, () => Date.now() + offset);
  await fx.bind('short', 'sk-short', {});
}, 120_000);
afterAll(async () => {
  await fx?.close();
});

const codes = (): string[] => readFileSync(join(fx.dir, 'state', 'audit.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { code?: string }).code ?? '');

describe('gateway token expiry', () => {
  it('an expired token is refused on the broker, and the agent re-attests and retries the call once', async () => {
    const a = await fx.agent();
    expect((await a.fetch('short', '/v1/x', { method: 'POST', body: '{}' })).status).toBe(200);
    expect(codes().filter((c) => c === 'GATEWAY_TOKEN')).toHaveLength(1);
    offset = 61_000; // past the binding's TTL (60 s) on the broker's clock only: the agent still holds its token
    const res = await a.fetch('short', '/v1/x', { method: 'POST', body: '{}' });
    expect(res.status).toBe(200);
    expect(codes()).toContain('GATEWAY_TOKEN_INVALID:TOKEN_ERR_JWT_EXPIRED');
    expect(codes().filter((c) => c === 'GATEWAY_TOKEN')).toHaveLength(2);
    expect(fx.seen).toEqual(['Bearer sk-short', 'Bearer sk-short']);
  });
});
