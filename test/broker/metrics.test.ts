/** /metrics on the (unauthenticated) API listener must not reveal which secrets exist. */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { BrokerConfig } from '../../broker/config.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { startTestBroker } from '../support/broker.js';
import { testBrokers } from '../support/test-brokers.js';
import { APPROVED, TestEnclave } from '../support/enclave.js';

const fleet = testBrokers('keygate-metrics-');

const NAMES = ['payments-db-password', 'stripe-live-key'];

/** A broker that has released both secrets twice; returns its /metrics text. */
async function metricsAfterReleases(name: string, extra: Partial<BrokerConfig>): Promise<string> {
  const b = await startTestBroker(join(fleet.dir, name), [fleet.pki.root.pem], extra);
  fleet.add(b);
  for (const secret of NAMES) {
    await bindSecret(b.store, b.providers.get('local')!, { secret, value: new TextEncoder().encode('v'), allow: [pcrSet(APPROVED)], provider: 'local' });
  }
  const enclave = new TestEnclave(fleet.pki, b.url);
  for (let i = 0; i < 2; i++) expect((await enclave.request(NAMES)).status).toBe(200);
  expect((await enclave.request(['no-such-secret'])).body.error?.code).toBe('POLICY_DENIED');
  const res = await fetch(`${b.url}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

describe('/metrics', () => {
  it('names no secret by default; releases are counted without a label', async () => {
    const text = await metricsAfterReleases('default', {});
    for (const secret of [...NAMES, 'no-such-secret']) expect(text).not.toContain(secret);
    expect(text).not.toMatch(/secret="/);
    expect(text).toMatch(/^keygate_releases_total 4$/m);
  });

  it('labels releases by secret only when metricsSecretLabels is set', async () => {
    const text = await metricsAfterReleases('opt-in', { metricsSecretLabels: true });
    for (const secret of NAMES) expect(text).toContain(`keygate_releases_total{secret="${secret}"} 2`);
    expect(text).not.toContain('no-such-secret');
  });
});
