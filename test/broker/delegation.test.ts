/**
 * Scoped delegation (issue 14) through the real HTTP API of a broker on a file store: an attested parent
 * delegates a subset of what it may read, for less time and a counted number of uses, to a sub-agent
 * that must attest as the audience; the chain is re-checked on every use (revocations, policy, the
 * registry's uses and revocations) and audited; `keygate delegations list` and `revoke --delegation`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { CompactSign, decodeProtectedHeader, type JWK } from 'jose';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';
import { bindSecret, pcrSet, revokeIdentities, unbindSecret } from '../../broker/admin.js';
import { NO_RATE_LIMITS } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, buildPcrs, h, TestEnclave, valueOf, type EnclaveResponse } from '../support/enclave.js';
import { cli } from '../support/cli.js';
import { cbor } from '../support/document.js';
import { approveBaseline, parseBaseline } from '../../broker/policy/baseline.js';
import type { DelegationClaims } from '../../broker/protocol/index.js';

let dir: string;
let pki: TestPki;
let broker: RunningBroker;
let brokerKey: JWK;
/** Moves the broker's clock (expiry tests); documents stay fresh (maxDocumentAgeSeconds 300). */
let offsetMs = 0;

const SUB_PCRS = { 0: h(0x44), 1: h(0x22), 2: h(0x33) };
const OTHER_PCRS = { 0: h(0x55), 1: h(0x22), 2: h(0x33) };
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** An enclave of the given image (PCR0 byte) with its own module id. */
function enclave(pcr0Byte: number, moduleId: string): TestEnclave & { moduleId: string } {
  const e = new TestEnclave(pki, broker.url, buildPcrs(pcr0Byte)) as TestEnclave & { moduleId: string };
  e.moduleId = moduleId;
  return e;
}
let parent: TestEnclave & { moduleId: string };
let sub: TestEnclave & { moduleId: string };
let subSub: TestEnclave & { moduleId: string };
let other: TestEnclave & { moduleId: string };

async function postJson(path: string, body: unknown): Promise<EnclaveResponse & { body: { delegation?: string; id?: string; exp?: number } }> {
  const res = await fetch(`${broker.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as EnclaveResponse['body'] };
}

/** A fresh document of `e` for a fresh challenge, base64. */
async function attest(e: TestEnclave & { moduleId: string }): Promise<string> {
  return Buffer.from(e.document(await e.challenge(), { moduleId: e.moduleId })).toString('base64');
}

interface DelegateBody {
  names: string[];
  ttlSeconds?: number;
  audience?: unknown;
  maxUses?: number;
  delegation?: string;
}

async function delegate(from: TestEnclave & { moduleId: string }, body: DelegateBody): Promise<Awaited<ReturnType<typeof postJson>>> {
  return postJson('/v1/delegations', { attestation: await attest(from), ttlSeconds: 30, audience: { pcrs: SUB_PCRS }, maxUses: 5, ...body });
}

/** A delegation token from the parent (must succeed). */
async function token(body: Partial<DelegateBody> = {}, from = parent): Promise<string> {
  const r = await delegate(from, { names: ['db'], ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body.delegation!;
}

async function present(e: TestEnclave & { moduleId: string }, delegation: string | undefined, names = ['db']): Promise<EnclaveResponse> {
  return postJson('/v1/secrets', { attestation: await attest(e), names, ...(delegation === undefined ? {} : { delegation }) });
}

function claimsOf(jws: string): DelegationClaims {
  return JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as DelegationClaims;
}

function auditRecords(): Array<Record<string, unknown>> {
  return readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.type === 'decision');
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-delegation-'));
  pki = await createTestPki(Date.now());
  broker = await startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), extraRootPems: [pki.root.pem], rateLimits: NO_RATE_LIMITS, delegation: { maxTtlSeconds: 600, maxDepth: 2, maxUses: 50 } }),
    { log: silentLogger, clock: () => Date.now() + offsetMs },
  );
  const local = broker.providers.get('local')!;
  await bindSecret(broker.store, local, { secret: 'db', value: enc('db-value'), allow: [pcrSet(APPROVED)], provider: 'local', ttlSeconds: 120 });
  await bindSecret(broker.store, local, { secret: 'api', value: enc('api-value'), allow: [pcrSet(APPROVED)], provider: 'local', ttlSeconds: 60 });
  await bindSecret(broker.store, local, { secret: 'others', value: enc('not-the-parents'), allow: [pcrSet(OTHER_PCRS)], provider: 'local' });
  brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
  parent = enclave(0x11, 'i-0123456789abcdef0-enc0000000000000001');
  sub = enclave(0x44, 'i-0123456789abcdef0-enc0000000000000002');
  subSub = enclave(0x66, 'i-0123456789abcdef0-enc0000000000000003');
  other = enclave(0x55, 'i-0123456789abcdef0-enc0000000000000004');
});

afterAll(async () => {
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('issuing and using a delegation', () => {
  it('a sub-agent the policy refuses gets a delegated name with its own attestation, sealed to its own key; the audit names the chain', async () => {
    expect((await present(sub, undefined)).body.error?.code).toBe('POLICY_DENIED');
    const issued = await delegate(parent, { names: ['db'], maxUses: 3 });
    expect(issued.status).toBe(200);
    const t = issued.body.delegation!;
    expect(decodeProtectedHeader(t)).toMatchObject({ alg: 'EdDSA', typ: 'keygate-delegation+jws', kid: brokerKey.kid });
    const claims = claimsOf(t);
    expect(claims).toMatchObject({ jti: issued.body.id, names: ['db'], maxUses: 3, depth: 1, parents: [], aud: { pcrs: SUB_PCRS } });
    expect(claims.chain).toEqual([expect.objectContaining({ moduleId: parent.moduleId, pcrs: expect.objectContaining({ 0: APPROVED[0] }), debug: false })]);

    const r = await present(sub, t);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const released = await sub.open(r.body.secrets![0]!, brokerKey);
    expect(valueOf(released)).toBe('db-value');
    expect(released.aud).toBe(sub.moduleId);
    // Sealed to the sub-agent's key: the parent's key cannot open it.
    await expect(sub.open(r.body.secrets![0]!, brokerKey, parent.privateKey)).rejects.toThrow();

    const records = auditRecords();
    const delegated = records.find((x) => x.decision === 'delegate' && (x.delegation as { id: string }).id === claims.jti);
    expect(delegated).toMatchObject({ code: 'DELEGATED', secret: 'db', moduleId: parent.moduleId });
    const release = records.find((x) => x.decision === 'release' && (x.delegation as { id?: string } | undefined)?.id === claims.jti);
    expect(release).toMatchObject({
      code: 'RELEASED',
      secret: 'db',
      moduleId: sub.moduleId,
      pcrs: expect.objectContaining({ 0: SUB_PCRS[0] }),
      delegation: { id: claims.jti, depth: 1, chain: [{ moduleId: parent.moduleId, pcr0: APPROVED[0] }], parents: [] },
    });
  });

  it('accepts a CBOR body carrying the delegation as for JSON', async () => {
    const t = await token();
    const doc = sub.document(await sub.challenge(), { moduleId: sub.moduleId });
    const body = Buffer.concat([Uint8Array.of(0xa3), cbor('attestation'), cbor(doc), cbor('names'), cbor(['db']), cbor('delegation'), cbor(t)]);
    const res = await fetch(`${broker.url}/v1/secrets`, { method: 'POST', headers: { 'content-type': 'application/cbor' }, body });
    expect(res.status, await res.clone().text()).toBe(200);
    // And a delegation request in CBOR: the audience as a CBOR map with integer PCR indexes.
    const parentDoc = parent.document(await parent.challenge(), { moduleId: parent.moduleId });
    const audience = new Map<number, string>([[0, SUB_PCRS[0]], [1, SUB_PCRS[1]], [2, SUB_PCRS[2]]]);
    const request = Buffer.concat([Uint8Array.of(0xa5), cbor('attestation'), cbor(parentDoc), cbor('names'), cbor(['db']), cbor('ttlSeconds'), cbor(10), cbor('maxUses'), cbor(1), cbor('audience'), cbor(new Map([['pcrs', audience]]))]);
    const issued = await fetch(`${broker.url}/v1/delegations`, { method: 'POST', headers: { 'content-type': 'application/cbor' }, body: request });
    expect(issued.status, await issued.clone().text()).toBe(200);
  });
});

describe('scope: names only narrow', () => {
  it('refuses to delegate a name the parent may not read (POLICY_DENIED) and an unknown one', async () => {
    expect((await delegate(parent, { names: ['db', 'others'] })).body.error?.code).toBe('POLICY_DENIED');
    expect((await delegate(parent, { names: ['nope'] })).body.error?.code).toBe('POLICY_DENIED');
  });

  it('a sub-agent asking for a name outside its delegation gets DELEGATION_NOT_ALLOWED, and nothing', async () => {
    const t = await token({ names: ['db'] });
    const r = await present(sub, t, ['db', 'api']);
    expect([r.status, r.body.error?.code, r.body.secrets]).toEqual([403, 'DELEGATION_NOT_ALLOWED', undefined]);
  });

  it('refuses malformed requests with BAD_REQUEST', async () => {
    for (const bad of [{ ttlSeconds: 0 }, { ttlSeconds: 1.5 }, { maxUses: 0 }, { audience: { pcrs: { 0: SUB_PCRS[0] } } }, { audience: { baseline: '../x' } }, { audience: 'x' }, { delegation: 7 }]) {
      const r = await delegate(parent, { names: ['db'], ...(bad as Partial<DelegateBody>) });
      expect([r.status, r.body.error?.code], JSON.stringify(bad)).toEqual([400, 'BAD_REQUEST']);
    }
  });
});

describe('TTL and uses', () => {
  it('refuses a TTL above the names\' binding TTLs, or above delegation.maxTtlSeconds', async () => {
    expect((await delegate(parent, { names: ['db', 'api'], ttlSeconds: 61 })).body.error?.code).toBe('DELEGATION_NOT_ALLOWED');
    expect((await delegate(parent, { names: ['db', 'api'], ttlSeconds: 60 })).status).toBe(200);
    expect((await delegate(parent, { names: ['db'], ttlSeconds: 121 })).body.error?.code).toBe('DELEGATION_NOT_ALLOWED');
    expect((await delegate(parent, { names: ['db'], maxUses: 51 })).body.error?.code).toBe('DELEGATION_NOT_ALLOWED');
  });

  it('a delegation stops at its expiry (DELEGATION_EXPIRED); what it released is cached no longer than the delegation lasts', async () => {
    const t = await token({ ttlSeconds: 5 });
    const r0 = await present(sub, t);
    expect(r0.status).toBe(200);
    // The binding allows 120 s; the delegation has at most 5 s left: the signed ttl says so.
    expect(r0.body.secrets![0]!.ttlSeconds).toBeLessThanOrEqual(5);
    expect((await sub.open(r0.body.secrets![0]!, brokerKey)).ttl).toBeLessThanOrEqual(5);
    offsetMs = 6_000;
    try {
      const r = await present(sub, t);
      expect([r.status, r.body.error?.code]).toEqual([401, 'DELEGATION_EXPIRED']);
    } finally {
      offsetMs = 0;
    }
  });

  it('allows exactly maxUses releases, also when they race (DELEGATION_EXHAUSTED after)', async () => {
    const t = await token({ maxUses: 3 });
    const results = await Promise.all(Array.from({ length: 8 }, () => present(sub, t)));
    expect(results.filter((r) => r.status === 200)).toHaveLength(3);
    expect(results.filter((r) => r.status !== 200).map((r) => r.body.error?.code)).toEqual(Array(5).fill('DELEGATION_EXHAUSTED'));
  });
});

describe('audience', () => {
  it('another enclave presenting the token (its own document) gets AUDIENCE_MISMATCH; the parent itself too', async () => {
    const t = await token();
    expect((await present(other, t)).body.error?.code).toBe('AUDIENCE_MISMATCH');
    expect((await present(parent, t)).body.error?.code).toBe('AUDIENCE_MISMATCH');
    expect((await present(sub, t)).status).toBe(200);
  });

  it('another enclave relaying the sub-agent\'s document gets nothing it can open, and the document only once', async () => {
    const t = await token();
    const doc = Buffer.from(sub.document(await sub.challenge(), { moduleId: sub.moduleId })).toString('base64');
    const first = await postJson('/v1/secrets', { attestation: doc, names: ['db'], delegation: t });
    expect(first.status).toBe(200);
    await expect(other.open(first.body.secrets![0]!, brokerKey)).rejects.toThrow();
    const replay = await postJson('/v1/secrets', { attestation: doc, names: ['db'], delegation: t });
    expect(replay.body.error?.code).toBe('NONCE_MISMATCH');
  });

  it('an audience baseline must be approved when the delegation is issued', async () => {
    expect((await delegate(parent, { names: ['db'], audience: { baseline: 'never-recorded' } })).body.error?.code).toBe('DELEGATION_NOT_ALLOWED');
  });
});

describe('forged, altered and foreign tokens', () => {
  it('an altered payload, a token signed by another key under the broker\'s kid, junk: DELEGATION_INVALID', async () => {
    const t = await token({ names: ['db'] });
    const [head, payload, sig] = t.split('.');
    const widened = Buffer.from(JSON.stringify({ ...claimsOf(t), names: ['db', 'api'], maxUses: 50 })).toString('base64url');
    expect((await present(sub, `${head}.${widened}.${sig}`, ['api'])).body.error?.code).toBe('DELEGATION_INVALID');
    const { privateKey } = generateKeyPairSync('ed25519');
    const forged = await new CompactSign(Buffer.from(Buffer.from(payload!, 'base64url'))).setProtectedHeader({ alg: 'EdDSA', kid: brokerKey.kid!, typ: 'keygate-delegation+jws' }).sign(privateKey);
    expect((await present(sub, forged)).body.error?.code).toBe('DELEGATION_INVALID');
    for (const junk of ['', 'a.b.c', t.slice(0, -2)]) {
      const r = await present(sub, junk);
      expect([r.status, r.body.error?.code], junk).toEqual([401, 'DELEGATION_INVALID']);
    }
  });

  it('a damaged delegation record is not believed: nothing is released (503 STORE_UNAVAILABLE)', async () => {
    const t = await token();
    writeFileSync(join(dir, 'store', 'delegations', `${claimsOf(t).jti}.json`), '{"id": "x", "uses": -1}');
    const r = await present(sub, t);
    expect([r.status, r.body.error?.code, r.body.secrets]).toEqual([503, 'STORE_UNAVAILABLE', undefined]);
    // keygate delegations list names it (exit 1) and still lists the others.
    const listed = await cli(['delegations', 'list', '--json', '--store', join(dir, 'store'), '--state', join(dir, 'state')]);
    expect(listed.status).toBe(1);
    const out = JSON.parse(listed.stdout) as { delegations: unknown[]; invalid: string[] };
    expect(out.invalid).toEqual([claimsOf(t).jti]);
    expect(out.delegations.length).toBeGreaterThan(0);
    rmSync(join(dir, 'store', 'delegations', `${claimsOf(t).jti}.json`));
  });

  it('a well-signed token the registry does not know (its record is gone) is refused: DELEGATION_INVALID', async () => {
    const t = await token();
    const { rmSync: rm } = await import('node:fs');
    rm(join(dir, 'store', 'delegations', `${claimsOf(t).jti}.json`));
    expect((await present(sub, t)).body.error?.code).toBe('DELEGATION_INVALID');
  });
});

describe('revocation of the parent, and of the delegation', () => {
  it('a parent revoked after delegating: its delegations, deeper ones too, stop (REVOKED); a binding changed: POLICY_DENIED', async () => {
    const local = broker.providers.get('local')!;
    await bindSecret(broker.store, local, { secret: 'tmp', value: enc('tmp-value'), allow: [pcrSet({ 0: h(0x77), 1: h(0x22), 2: h(0x33) })], provider: 'local' });
    const rootImage = enclave(0x77, 'i-0123456789abcdef0-enc0000000000000077');
    const t = await token({ names: ['tmp'], ttlSeconds: 60 }, rootImage);
    const deeper = await delegate(sub, { names: ['tmp'], ttlSeconds: 30, maxUses: 1, audience: { pcrs: { 0: h(0x66), 1: h(0x22), 2: h(0x33) } }, delegation: t });
    expect(deeper.status, JSON.stringify(deeper.body)).toBe(200);
    expect((await present(sub, t, ['tmp'])).status).toBe(200);
    await revokeIdentities(broker.store, { pcr0: [h(0x77)] });
    expect((await present(sub, t, ['tmp'])).body.error?.code).toBe('REVOKED');
    expect((await present(subSub, deeper.body.delegation!, ['tmp'])).body.error?.code).toBe('REVOKED');
    // The binding changing under a live delegation: the parent's policy decides, now.
    const t2 = await token({ names: ['api'], ttlSeconds: 30 });
    await unbindSecret(broker.store, 'api');
    expect((await present(sub, t2, ['api'])).body.error?.code).toBe('POLICY_DENIED');
    await bindSecret(broker.store, local, { secret: 'api', value: enc('api-value'), allow: [pcrSet(APPROVED)], provider: 'local', ttlSeconds: 60 });
  });

  it('keygate delegations list shows it; keygate revoke --delegation ends it and every delegation derived from it', async () => {
    const t = await token({ names: ['db'], maxUses: 4 });
    const id = claimsOf(t).jti;
    const deeper = await delegate(sub, { names: ['db'], ttlSeconds: 10, maxUses: 2, audience: { pcrs: { 0: h(0x66), 1: h(0x22), 2: h(0x33) } }, delegation: t });
    expect(deeper.status).toBe(200);
    expect((await present(sub, t)).status).toBe(200);
    const flags = ['--store', join(dir, 'store'), '--state', join(dir, 'state')];
    const listed = await cli(['delegations', 'list', '--json', ...flags]);
    expect(listed.status, listed.stderr).toBe(0);
    const rows = (JSON.parse(listed.stdout) as { delegations: Array<Record<string, unknown>> }).delegations;
    // Uses: one release, and the two the sub-delegation took out of it.
    expect(rows.find((d) => d.id === id)).toMatchObject({ id, parent: { moduleId: parent.moduleId, pcr0: APPROVED[0] }, names: ['db'], maxUses: 4, uses: 3, revoked: false, state: 'active', depth: 1, from: null });
    expect(rows.find((d) => d.id === deeper.body.id)).toMatchObject({ depth: 2, from: id, maxUses: 2, uses: 0 });
    const text = await cli(['delegations', 'list', ...flags]);
    expect(text.stdout).toContain(`${id}  active  depth 1  uses 3/4`);

    const revoked = await cli(['revoke', '--delegation', id, ...flags]);
    expect(revoked.status, revoked.stderr).toBe(0);
    const r = await present(sub, t);
    expect([r.status, r.body.error?.code]).toEqual([403, 'DELEGATION_REVOKED']);
    expect((await present(subSub, deeper.body.delegation!)).body.error?.code).toBe('DELEGATION_REVOKED');
    // Revoked is revoked: the record says so, and delegating further from it is refused too.
    expect((await delegate(sub, { names: ['db'], delegation: t })).body.error?.code).toBe('DELEGATION_REVOKED');
    // The refusal is audited per name, naming the chain.
    expect(auditRecords().filter((x) => x.code === `DELEGATION_REVOKED:revoked:${id}`).at(-1)).toMatchObject({
      decision: 'deny',
      secret: 'db',
      moduleId: sub.moduleId,
      delegation: { id, depth: 1, chain: [{ moduleId: parent.moduleId, pcr0: APPROVED[0] }] },
    });
    const after = JSON.parse((await cli(['delegations', 'list', '--json', ...flags])).stdout) as { delegations: Array<{ id: string; state: string }> };
    expect(after.delegations.find((d) => d.id === id)?.state).toBe('REVOKED');
    const unknown = await cli(['revoke', '--delegation', 'A'.repeat(22), ...flags]);
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toMatch(/no delegation/);
  });
});

describe('chains', () => {
  it('a sub-agent delegates further, only narrowing; depth is bounded by delegation.maxDepth', async () => {
    const t = await token({ names: ['db', 'api'], ttlSeconds: 60, maxUses: 10 });
    const audience2 = { pcrs: { 0: h(0x66), 1: h(0x22), 2: h(0x33) } };
    // Widening is refused: a name outside, a TTL past the parent's, more uses than are left.
    expect((await delegate(sub, { names: ['db', 'others'], audience: audience2, delegation: t })).body.error?.code).toBe('DELEGATION_NOT_ALLOWED');
    expect((await delegate(sub, { names: ['db'], ttlSeconds: 120, audience: audience2, delegation: t })).body.error?.code).toBe('DELEGATION_NOT_ALLOWED');
    expect((await delegate(sub, { names: ['db'], maxUses: 11, audience: audience2, delegation: t })).body.error?.code).toBe('DELEGATION_EXHAUSTED');
    // Only the audience may delegate further.
    expect((await delegate(other, { names: ['db'], audience: audience2, delegation: t })).body.error?.code).toBe('AUDIENCE_MISMATCH');
    const second = await delegate(sub, { names: ['db'], ttlSeconds: 20, maxUses: 2, audience: audience2, delegation: t });
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    const c2 = claimsOf(second.body.delegation!);
    expect(c2).toMatchObject({ depth: 2, parents: [claimsOf(t).jti], names: ['db'] });
    expect(c2.chain.map((s) => s.moduleId)).toEqual([parent.moduleId, sub.moduleId]);
    const r = await present(subSub, second.body.delegation!);
    expect(r.status).toBe(200);
    expect(auditRecords().find((x) => x.decision === 'release' && (x.delegation as { id?: string } | undefined)?.id === c2.jti)).toMatchObject({
      moduleId: subSub.moduleId,
      delegation: { depth: 2, chain: [{ moduleId: parent.moduleId, pcr0: APPROVED[0] }, { moduleId: sub.moduleId, pcr0: SUB_PCRS[0] }], parents: [claimsOf(t).jti] },
    });
    // Depth 3 is past maxDepth 2.
    const third = await delegate(subSub, { names: ['db'], ttlSeconds: 10, maxUses: 1, audience: { pcrs: OTHER_PCRS }, delegation: second.body.delegation! });
    expect([third.status, third.body.error?.code]).toEqual([403, 'DELEGATION_NOT_ALLOWED']);
  });
});

describe('a parent quarantined after delegating', () => {
  it('its delegations stop (QUARANTINED) while the quarantine lasts; a quarantined sub-agent gets nothing through a token either', async () => {
    const qdir = mkdtempSync(join(tmpdir(), 'keygate-delegation-q-'));
    const q = await startBroker(
      resolveConfig({ listen: '127.0.0.1:0', store: join(qdir, 'store'), stateDir: join(qdir, 'state'), extraRootPems: [pki.root.pem], rateLimits: { ...NO_RATE_LIMITS, quarantineAfterDenials: 2, quarantineWindowSeconds: 60, quarantineSeconds: 600 } }),
      { log: silentLogger },
    );
    try {
      const local = q.providers.get('local')!;
      await bindSecret(q.store, local, { secret: 'db', value: enc('db-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
      await bindSecret(q.store, local, { secret: 'others', value: enc('x'), allow: [pcrSet(OTHER_PCRS)], provider: 'local' });
      const at = (e: TestEnclave & { moduleId: string }): TestEnclave & { moduleId: string } => Object.assign(new TestEnclave(pki, q.url, e.pcrs), { moduleId: e.moduleId });
      const [p, s2] = [at(parent), at(sub)];
      const send = async (path: string, body: Record<string, unknown>, e: TestEnclave & { moduleId: string }): Promise<{ status: number; body: { delegation?: string; error?: { code: string } } }> => {
        const res = await fetch(`${q.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ attestation: Buffer.from(e.document(await e.challenge(), { moduleId: e.moduleId })).toString('base64'), ...body }) });
        return { status: res.status, body: (await res.json()) as { delegation?: string; error?: { code: string } } };
      };
      const issued = await send('/v1/delegations', { names: ['db'], ttlSeconds: 30, maxUses: 5, audience: { pcrs: SUB_PCRS } }, p);
      expect(issued.status).toBe(200);
      expect((await send('/v1/secrets', { names: ['db'], delegation: issued.body.delegation }, s2)).status).toBe(200);
      // The parent probes for what it may not read until it is quarantined.
      for (let i = 0; i < 2; i++) expect((await send('/v1/secrets', { names: ['others'] }, p)).body.error?.code).toBe('POLICY_DENIED');
      expect((await send('/v1/secrets', { names: ['db'] }, p)).body.error?.code).toBe('QUARANTINED');
      const r = await send('/v1/secrets', { names: ['db'], delegation: issued.body.delegation }, s2);
      expect([r.status, r.body.error?.code]).toEqual([429, 'QUARANTINED']);

      // A sub-agent that probes on its own account is quarantined itself: a valid token does not lift it.
      const fresh = at(enclave(0x11, 'i-0fedcba9876543210-enc0000000000000009'));
      const sub2 = at(enclave(0x44, 'i-0fedcba9876543210-enc0000000000000010'));
      const t2 = await send('/v1/delegations', { names: ['db'], ttlSeconds: 30, maxUses: 5, audience: { pcrs: SUB_PCRS } }, fresh);
      expect(t2.status).toBe(200);
      expect((await send('/v1/secrets', { names: ['db'], delegation: t2.body.delegation }, sub2)).status).toBe(200);
      for (let i = 0; i < 2; i++) expect((await send('/v1/secrets', { names: ['db'] }, sub2)).body.error?.code).toBe('POLICY_DENIED');
      expect((await send('/v1/secrets', { names: ['db'], delegation: t2.body.delegation }, sub2)).body.error?.code).toBe('QUARANTINED');
    } finally {
      await q.close();
      rmSync(qdir, { recursive: true, force: true });
    }
  });
});

describe('an approved baseline as the audience', () => {
  it('admits enclaves of that build while it is approved and unrevoked (AUDIENCE_MISMATCH otherwise)', async () => {
    const bdir = mkdtempSync(join(tmpdir(), 'keygate-delegation-b-'));
    const admin = generateKeyPairSync('ed25519');
    writeFileSync(join(bdir, 'admin.pub.pem'), admin.publicKey.export({ type: 'spki', format: 'pem' }));
    const b = await startBroker(
      resolveConfig({ listen: '127.0.0.1:0', store: join(bdir, 'store'), stateDir: join(bdir, 'state'), extraRootPems: [pki.root.pem], rateLimits: NO_RATE_LIMITS, adminKeys: [join(bdir, 'admin.pub.pem')] }),
      { log: silentLogger },
    );
    try {
      await bindSecret(b.store, b.providers.get('local')!, { secret: 'db', value: enc('db-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
      const body = parseBaseline({ formatVersion: 1, name: 'sub-build', pcrs: SUB_PCRS, builder: 'ci', createdAt: '2026-11-01T00:00:00.000Z', source: 'eif', approvals: [] });
      const approved = { ...body, approvals: [await approveBaseline(body, admin.privateKey)] };
      await b.store.update(async (_s, tx) => tx.putBaseline(approved));
      const at = (e: TestEnclave & { moduleId: string }): TestEnclave & { moduleId: string } => Object.assign(new TestEnclave(pki, b.url, e.pcrs), { moduleId: e.moduleId });
      const send = async (path: string, extra: Record<string, unknown>, e: TestEnclave & { moduleId: string }): Promise<{ status: number; body: { delegation?: string; error?: { code: string } } }> => {
        const res = await fetch(`${b.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ attestation: Buffer.from(e.document(await e.challenge(), { moduleId: e.moduleId })).toString('base64'), ...extra }) });
        return { status: res.status, body: (await res.json()) as { delegation?: string; error?: { code: string } } };
      };
      const issued = await send('/v1/delegations', { names: ['db'], ttlSeconds: 30, maxUses: 5, audience: { baseline: 'sub-build' } }, at(parent));
      expect(issued.status, JSON.stringify(issued.body)).toBe(200);
      expect((await send('/v1/secrets', { names: ['db'], delegation: issued.body.delegation }, at(sub))).status).toBe(200);
      expect((await send('/v1/secrets', { names: ['db'], delegation: issued.body.delegation }, at(other))).body.error?.code).toBe('AUDIENCE_MISMATCH');
      await revokeIdentities(b.store, { baselines: ['sub-build'] });
      expect((await send('/v1/secrets', { names: ['db'], delegation: issued.body.delegation }, at(sub))).body.error?.code).toBe('AUDIENCE_MISMATCH');
    } finally {
      await b.close();
      rmSync(bdir, { recursive: true, force: true });
    }
  });
});
