/**
 * Adversarial review of delegation (issue 14): chains whose middle link loses its standing after it
 * delegated further (quarantined, or admitted only through a baseline since revoked), a CBOR body that
 * smuggles an unchecked audience through `__proto__`, and names that must never reach a sub-agent
 * without their own safeguards (human approval, inject bindings). Real HTTP API, file store.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';
import { bindSecret, pcrSet, revokeIdentities } from '../../broker/admin.js';
import { approverKid } from '../../broker/approval/operations.js';
import { approveBaseline, parseBaseline } from '../../broker/policy/baseline.js';
import { NO_RATE_LIMITS } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, buildPcrs, h, TestEnclave } from '../support/enclave.js';
import { cbor } from '../support/document.js';

let dir: string;
let pki: TestPki;
let broker: RunningBroker;
const admin = generateKeyPairSync('ed25519');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const SUB_PCRS = { 0: h(0x44), 1: h(0x22), 2: h(0x33) };
const SUBSUB_PCRS = { 0: h(0x66), 1: h(0x22), 2: h(0x33) };

type Enclave = TestEnclave & { moduleId: string };
/** An enclave of image `pcr0Byte` on its own instance (its own quarantine key). */
function enclave(pcr0Byte: number, n: number): Enclave {
  return Object.assign(new TestEnclave(pki, broker.url, buildPcrs(pcr0Byte)), { moduleId: `i-0${n.toString(16).padStart(16, '0')}-enc0000000000000001` });
}

type Answer = { status: number; body: { delegation?: string; id?: string; exp?: number; error?: { code: string }; secrets?: unknown[] } };
async function send(path: string, e: Enclave, body: Record<string, unknown>): Promise<Answer> {
  const attestation = Buffer.from(e.document(await e.challenge(), { moduleId: e.moduleId })).toString('base64');
  const res = await fetch(`${broker.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ attestation, ...body }) });
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}
const delegate = (e: Enclave, body: Record<string, unknown>): Promise<Answer> => send('/v1/delegations', e, { ttlSeconds: 30, maxUses: 5, ...body });
const present = (e: Enclave, delegation: string | undefined, names = ['db']): Promise<Answer> => send('/v1/secrets', e, { names, ...(delegation ? { delegation } : {}) });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-delegation-review-'));
  pki = await createTestPki(Date.now());
  writeFileSync(join(dir, 'admin.pub.pem'), admin.publicKey.export({ type: 'spki', format: 'pem' }));
  broker = await startBroker(
    resolveConfig({
      listen: '127.0.0.1:0',
      store: join(dir, 'store'),
      stateDir: join(dir, 'state'),
      extraRootPems: [pki.root.pem],
      adminKeys: [join(dir, 'admin.pub.pem')],
      rateLimits: { ...NO_RATE_LIMITS, quarantineAfterDenials: 2, quarantineWindowSeconds: 60, quarantineSeconds: 600 },
    }),
    { log: silentLogger },
  );
  const local = broker.providers.get('local')!;
  await bindSecret(broker.store, local, { secret: 'db', value: enc('db-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
  const body = parseBaseline({ formatVersion: 1, name: 'sub-build', pcrs: SUB_PCRS, builder: 'ci', createdAt: '2026-11-01T00:00:00.000Z', source: 'eif', approvals: [] });
  await broker.store.update(async (_s, tx) => tx.putBaseline({ ...body, approvals: [await approveBaseline(body, admin.privateKey)] }));
});

afterAll(async () => {
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('the middle of a chain', () => {
  it('a delegate quarantined after delegating further: the delegations derived from it stop (QUARANTINED)', async () => {
    const [root, mid, leaf] = [enclave(0x11, 1), enclave(0x44, 2), enclave(0x66, 3)];
    const d1 = await delegate(root, { names: ['db'], audience: { pcrs: SUB_PCRS } });
    expect(d1.status, JSON.stringify(d1.body)).toBe(200);
    const d2 = await delegate(mid, { names: ['db'], ttlSeconds: 20, maxUses: 2, audience: { pcrs: SUBSUB_PCRS }, delegation: d1.body.delegation });
    expect(d2.status, JSON.stringify(d2.body)).toBe(200);
    expect((await present(leaf, d2.body.delegation)).status).toBe(200);
    // The middle delegate probes on its own account until it is quarantined.
    for (let i = 0; i < 2; i++) expect((await present(mid, undefined)).body.error?.code).toBe('POLICY_DENIED');
    expect((await present(mid, d1.body.delegation)).body.error?.code).toBe('QUARANTINED');
    const r = await present(leaf, d2.body.delegation);
    expect([r.status, r.body.error?.code, r.body.secrets]).toEqual([429, 'QUARANTINED', undefined]);
  });

  it('a delegate admitted through a baseline since revoked: the delegations derived from it stop (AUDIENCE_MISMATCH)', async () => {
    const [root, mid, leaf] = [enclave(0x11, 11), enclave(0x44, 12), enclave(0x66, 13)];
    const d1 = await delegate(root, { names: ['db'], audience: { baseline: 'sub-build' } });
    expect(d1.status, JSON.stringify(d1.body)).toBe(200);
    const d2 = await delegate(mid, { names: ['db'], ttlSeconds: 20, maxUses: 2, audience: { pcrs: SUBSUB_PCRS }, delegation: d1.body.delegation });
    expect(d2.status, JSON.stringify(d2.body)).toBe(200);
    expect((await present(leaf, d2.body.delegation)).status).toBe(200);
    await revokeIdentities(broker.store, { baselines: ['sub-build'] });
    expect((await present(mid, d1.body.delegation)).body.error?.code).toBe('AUDIENCE_MISMATCH');
    const r = await present(leaf, d2.body.delegation);
    expect([r.status, r.body.error?.code, r.body.secrets]).toEqual([403, 'AUDIENCE_MISMATCH', undefined]);
  });
});

describe('malformed audiences', () => {
  it('a CBOR audience map cannot smuggle a baseline in through "__proto__" past the PCR check (BAD_REQUEST)', async () => {
    const root = enclave(0x11, 21);
    const doc = root.document(await root.challenge(), { moduleId: root.moduleId });
    // pcrs lacks PCR1/2 (refused on its own); the inherited "baseline" must not make it pass.
    const audience = new Map<string, unknown>([
      ['pcrs', new Map([[0, SUB_PCRS[0]]])],
      ['__proto__', new Map([['baseline', 'sub-build']])],
    ]);
    const body = Buffer.concat([Uint8Array.of(0xa5), cbor('attestation'), cbor(doc), cbor('names'), cbor(['db']), cbor('ttlSeconds'), cbor(10), cbor('maxUses'), cbor(1), cbor('audience'), cbor(audience)]);
    const res = await fetch(`${broker.url}/v1/delegations`, { method: 'POST', headers: { 'content-type': 'application/cbor' }, body });
    const answer = (await res.json()) as Answer['body'];
    expect([res.status, answer.error?.code, answer.delegation]).toEqual([400, 'BAD_REQUEST', undefined]);
  });
});

describe('names with their own safeguards', () => {
  it('a name that requires human approval: the sub-agent gets APPROVAL_PENDING, not the value (approval is not skipped)', async () => {
    const approver = generateKeyPairSync('ed25519');
    const x = (approver.publicKey.export({ format: 'jwk' }) as { x: string }).x;
    await bindSecret(broker.store, broker.providers.get('local')!, {
      secret: 'vault',
      value: enc('vault-value'),
      allow: [pcrSet(APPROVED)],
      provider: 'local',
      approval: { required: 1, approvers: [{ kid: approverKid(approver.publicKey), jwk: { kty: 'OKP', crv: 'Ed25519', x } }], windowSeconds: 600 },
    });
    const [root, sub] = [enclave(0x11, 31), enclave(0x44, 32)];
    const d = await delegate(root, { names: ['vault'], audience: { pcrs: SUB_PCRS } });
    expect(d.status, JSON.stringify(d.body)).toBe(200);
    const r = await present(sub, d.body.delegation, ['vault']);
    expect([r.status, r.body.error?.code, r.body.secrets]).toEqual([202, 'APPROVAL_PENDING', undefined]);
  });
});

describe('held: attacks that must keep failing', () => {
  it('an inject (gateway) binding is neither delegated nor released through a delegation (POLICY_DENIED)', async () => {
    const local = broker.providers.get('local')!;
    await bindSecret(broker.store, local, {
      secret: 'upstream-key',
      value: enc('sk-live'),
      allow: [pcrSet(APPROVED)],
      provider: 'local',
      inject: { upstream: 'https://api.example.com', header: 'authorization', template: 'Bearer {value}', routes: ['GET /v1/*'], maxBodyBytes: 1024, budget: { requests: 10, windowSeconds: 60 } },
    });
    const [root, sub] = [enclave(0x11, 41), enclave(0x44, 42)];
    expect((await delegate(root, { names: ['upstream-key'], audience: { pcrs: SUB_PCRS } })).body.error?.code).toBe('POLICY_DENIED');
    const d = await delegate(root, { names: ['db'], audience: { pcrs: SUB_PCRS } });
    expect((await present(sub, d.body.delegation, ['upstream-key'])).body.error?.code).toBe('DELEGATION_NOT_ALLOWED');
  });

  it('the root admitted through a baseline rule: a re-bind to other PCRs stops its delegation (POLICY_DENIED); revoking its baseline stops them (REVOKED)', async () => {
    const local = broker.providers.get('local')!;
    const rootPcrs = { 0: h(0x77), 1: h(0x22), 2: h(0x33) };
    const body = parseBaseline({ formatVersion: 1, name: 'root-build', pcrs: rootPcrs, builder: 'ci', createdAt: '2026-11-01T00:00:00.000Z', source: 'eif', approvals: [] });
    await broker.store.update(async (_s, tx) => tx.putBaseline({ ...body, approvals: [await approveBaseline(body, admin.privateKey)] }));
    await bindSecret(broker.store, local, { secret: 'by-build', value: enc('b'), allow: [pcrSet(rootPcrs, 'root-build')], provider: 'local' });
    await bindSecret(broker.store, local, { secret: 'rebound', value: enc('r'), allow: [pcrSet(rootPcrs)], provider: 'local' });
    const [root, sub] = [enclave(0x77, 51), enclave(0x44, 52)];
    const t = await delegate(root, { names: ['rebound'], audience: { pcrs: SUB_PCRS } });
    expect(t.status, JSON.stringify(t.body)).toBe(200);
    expect((await present(sub, t.body.delegation, ['rebound'])).status).toBe(200);
    // Re-bound (not unbound) to another image: the root's current binding decides.
    await bindSecret(broker.store, local, { secret: 'rebound', value: enc('r2'), allow: [pcrSet(APPROVED)], provider: 'local' });
    expect((await present(sub, t.body.delegation, ['rebound'])).body.error?.code).toBe('POLICY_DENIED');
    // The binding names the root's build: revoking the baseline (the chain recorded only PCRs) stops the delegation.
    const b = await delegate(root, { names: ['by-build'], audience: { pcrs: SUB_PCRS } });
    expect(b.status, JSON.stringify(b.body)).toBe(200);
    expect((await present(sub, b.body.delegation, ['by-build'])).status).toBe(200);
    await revokeIdentities(broker.store, { baselines: ['root-build'] });
    const r = await present(sub, b.body.delegation, ['by-build']);
    expect([r.status, r.body.error?.code]).toEqual([403, 'REVOKED']);
  });
});

describe('the audit of an issued delegation', () => {
  it('names whom it is for, until when and how many uses, besides the chain', async () => {
    const root = enclave(0x11, 61);
    const d = await delegate(root, { names: ['db'], ttlSeconds: 25, maxUses: 4, audience: { pcrs: SUB_PCRS } });
    expect(d.status, JSON.stringify(d.body)).toBe(200);
    const records = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const issued = records.find((x) => x.decision === 'delegate' && (x.delegation as { id?: string } | undefined)?.id === d.body.id);
    expect(issued).toMatchObject({ code: 'DELEGATED', secret: 'db', moduleId: root.moduleId, delegation: { depth: 1, grant: { aud: { pcrs: SUB_PCRS }, exp: d.body.exp, maxUses: 4 } } });
  });
});
