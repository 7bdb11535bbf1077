/**
 * delegations issued before the `dlg_` prefix (bare base64url, 1 in 64 starting with "-") keep
 * working everywhere: presented, delegated from (a parents list holding an old id), listed, revoked with
 * --delegation=ID, and a deeper one stops with its old-id parent.
 * The broker is made to issue old-format ids by mocking newDelegationId.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';

let nextOldId = 0;
vi.mock('../../broker/delegation/registry.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../broker/delegation/registry.js')>();
  // Old format: 16 random bytes as bare base64url; force the first character to "-" or "_" alternately.
  return { ...orig, newDelegationId: () => `${nextOldId++ % 2 === 0 ? '-' : '_'}${randomBytes(16).toString('base64url').slice(1)}` };
});

const { startBroker } = await import('../../broker/broker.js');
const { resolveConfig } = await import('../../broker/config.js');
const { silentLogger } = await import('../../broker/log.js');
const { bindSecret, pcrSet } = await import('../../broker/admin.js');
const { NO_RATE_LIMITS } = await import('../support/broker.js');
const { createTestPki } = await import('../support/pki.js');
const { APPROVED, buildPcrs, h, TestEnclave, valueOf } = await import('../support/enclave.js');
const { cli } = await import('../support/cli.js');
type RunningBroker = import('../../broker/broker.js').RunningBroker;
type Enc = InstanceType<typeof TestEnclave> & { moduleId: string };

let dir: string;
let broker: RunningBroker;
let brokerKey: JWK;
let parent: Enc;
let sub: Enc;
let subSub: Enc;
const SUB_PCRS = { 0: h(0x44), 1: h(0x22), 2: h(0x33) };

async function postJson(path: string, body: unknown): Promise<{ status: number; body: { delegation?: string; id?: string; secrets?: unknown[]; error?: { code: string } } }> {
  const res = await fetch(`${broker.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as never };
}
async function attest(e: Enc): Promise<string> {
  return Buffer.from(e.document(await e.challenge(), { moduleId: e.moduleId })).toString('base64');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-oldid-'));
  const pki = await createTestPki(Date.now());
  broker = await startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), extraRootPems: [pki.root.pem], rateLimits: NO_RATE_LIMITS, delegation: { maxTtlSeconds: 600, maxDepth: 2, maxUses: 50 } }),
    { log: silentLogger },
  );
  await bindSecret(broker.store, broker.providers.get('local')!, { secret: 'db', value: new TextEncoder().encode('db-value'), allow: [pcrSet(APPROVED)], provider: 'local', ttlSeconds: 120 });
  brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
  const mk = (b: number, m: string): Enc => Object.assign(new TestEnclave(pki, broker.url, buildPcrs(b)), { moduleId: m });
  parent = mk(0x11, 'i-0123456789abcdef0-enc0000000000000001');
  sub = mk(0x44, 'i-0123456789abcdef0-enc0000000000000002');
  subSub = mk(0x66, 'i-0123456789abcdef0-enc0000000000000003');
}, 60_000);

afterAll(async () => {
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('old-format delegation ids', () => {
  it('an id starting with "-" is issued, presented, delegated from, listed and revoked with --delegation=ID', async () => {
    const issued = await postJson('/v1/delegations', { attestation: await attest(parent), names: ['db'], ttlSeconds: 60, audience: { pcrs: SUB_PCRS }, maxUses: 5 });
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    const id = issued.body.id!;
    expect(id.startsWith('-')).toBe(true);
    expect(readdirSync(join(dir, 'store', 'delegations'))).toContain(`${id}.json`);
    const used = await postJson('/v1/secrets', { attestation: await attest(sub), names: ['db'], delegation: issued.body.delegation });
    expect(used.status, JSON.stringify(used.body)).toBe(200);
    expect(valueOf(await sub.open(used.body.secrets![0] as never, brokerKey))).toBe('db-value');
    // delegated further: the deeper token's parents list holds the old id
    const deeper = await postJson('/v1/delegations', { attestation: await attest(sub), names: ['db'], ttlSeconds: 30, audience: { pcrs: { 0: h(0x66), 1: h(0x22), 2: h(0x33) } }, maxUses: 2, delegation: issued.body.delegation });
    expect(deeper.status, JSON.stringify(deeper.body)).toBe(200);
    expect(deeper.body.id!.startsWith('_')).toBe(true);
    expect((await postJson('/v1/secrets', { attestation: await attest(subSub), names: ['db'], delegation: deeper.body.delegation })).status).toBe(200);

    const flags = ['--store', join(dir, 'store'), '--state', join(dir, 'state')];
    const listed = JSON.parse((await cli(['delegations', 'list', '--json', ...flags])).stdout) as { delegations: Array<{ id: string; from: string | null; state: string }> };
    expect(listed.delegations.map((d) => [d.id, d.from, d.state]).sort()).toEqual([[id, null, 'active'], [deeper.body.id, id, 'active']].sort());

    const spaced = await cli(['revoke', '--delegation', id, ...flags]);
    expect([spaced.status, spaced.stderr.split('\n')[0]]).toEqual([2, `keygate revoke: --delegation needs a value (one that starts with "-" is written --delegation=VALUE)`]);
    const revoked = await cli(['revoke', `--delegation=${id}`, ...flags]);
    expect(revoked.status, revoked.stderr).toBe(0);
    const after = await postJson('/v1/secrets', { attestation: await attest(subSub), names: ['db'], delegation: deeper.body.delegation });
    expect([after.status, after.body.error?.code]).toEqual([403, 'DELEGATION_REVOKED']);
    const again = await postJson('/v1/secrets', { attestation: await attest(sub), names: ['db'], delegation: issued.body.delegation });
    expect(again.body.error?.code).toBe('DELEGATION_REVOKED');
  }, 120_000);
});
