/**
 * Human approval (issue 14) on the file store, through the real HTTP API, the CLI (`keygate bind
 * --approval`, `keygate approvals list|grant|deny`) and the enclave agent: k-of-n distinct keys, a
 * non-approver's grant, a signature over another request, denial, expiry (the broker's injectable clock),
 * single use, version changes, audit records naming the approver keys, and a forged 202.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { JWK } from 'jose';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';
import { NO_RATE_LIMITS } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { TestEnclave, buildPcrs, h, valueOf } from '../support/enclave.js';
import { cli } from '../support/cli.js';
import { errorOf } from '../support/agent.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { createAgent, type SecretAgent } from '../../enclave-agent/index.js';
import { FileApprovalStore } from '../../broker/approval/file-approvals.js';
import { approverKid, signDecision, submitDecision } from '../../broker/approval/operations.js';
import { ApprovalError, approvalStatement } from '../../broker/approval/request.js';
import { FileStore } from '../../broker/store/file-store.js';
import { parseBinding } from '../../broker/policy/schema.js';

let dir: string;
let pki: TestPki;
let broker: RunningBroker;
let brokerKey: JWK;
let simulator: NsmSimulator;
const agents: SecretAgent[] = [];
/** The broker's wall clock (and the enclave's): tests move it to pass a window. */
let offset = 0;
const now = (): number => Date.now() + offset;

interface Approver {
  readonly name: string;
  readonly privateKey: KeyObject;
  readonly kid: string;
  readonly privateFile: string;
  readonly publicFile: string;
}
const keys: Record<string, Approver> = {};

function makeKey(name: string, pem = false): Approver {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privateFile = join(dir, `${name}.jwk`);
  const publicFile = join(dir, pem ? `${name}.pem` : `${name}.pub`);
  writeFileSync(privateFile, JSON.stringify(privateKey.export({ format: 'jwk' })));
  writeFileSync(publicFile, pem ? (publicKey.export({ format: 'pem', type: 'spki' }) as string) : JSON.stringify(publicKey.export({ format: 'jwk' })));
  return { name, privateKey, kid: approverKid(privateKey), privateFile, publicFile };
}

const storeFlags = (): string[] => ['--store', join(dir, 'store'), '--state', join(dir, 'state')];
const pcrFlags = (pcrs: Record<number, string>): string[] => ['--pcr0', pcrs[0]!, '--pcr1', pcrs[1]!, '--pcr2', pcrs[2]!];
const TEST_PCRS = { 0: h(0x11), 1: h(0x22), 2: h(0x33) };

async function bind(secret: string, value: string, approval: string[], pcrs: Record<number, string> = TEST_PCRS): Promise<void> {
  const r = await cli(['bind', secret, ...pcrFlags(pcrs), '--value-stdin', ...approval, ...storeFlags()], value);
  expect(r.status, r.stderr).toBe(0);
}

interface ListedRequest {
  id: string;
  secret: string;
  version: number;
  status: string;
  identity: { moduleId: string; pcr0: string; pcr1: string; pcr2: string; instance: string | null };
  createdAt: string;
  expiresAt: string;
  grants: Array<{ kid: string; at: string }>;
  granted: string[];
  required: number;
}

async function list(all = false): Promise<ListedRequest[]> {
  const r = await cli(['approvals', 'list', '--json', ...(all ? ['--all'] : []), ...storeFlags()], undefined, undefined, now);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as ListedRequest[];
}

async function decide(sub: 'grant' | 'deny', id: string, who: Approver): Promise<{ status: number | null; json: { error?: { code: string }; changed?: boolean; grants?: number } }> {
  const r = await cli(['approvals', sub, id, '--key', who.privateFile, '--json', ...storeFlags()], undefined, undefined, now);
  return { status: r.status, json: JSON.parse(r.stdout) as { error?: { code: string }; changed?: boolean; grants?: number } };
}

type Pending = { error: { code: string }; approvals: Array<{ id: string; secret: string; version: number; expiresAt: string }> };

/** The approval records of the audit file, in order. */
function approvalAudit(): Array<{ code: string; secret: string; decision: string; approval: { id: string; event: string; approvers: string[] } }> {
  return readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { type: string; decision?: string; code: string; secret: string; approval?: { id: string; event: string; approvers: string[] } })
    .filter((r) => r.type === 'decision' && r.decision === 'approval') as ReturnType<typeof approvalAudit>;
}

/** Polls `read` until `check` passes (bounded): the sweep audits on its own schedule. */
async function eventually<T>(read: () => T, check: (value: T) => void): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      check(read());
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * A request's audit trail, order-free where the sweep races the release path: the approvers named at
 * creation, the distinct approvers with a GRANTED record (the sweep audits grants while the request is
 * open, the release path those it had not; a race may audit one twice, never zero times), and the end.
 */
function trail(id: string): { pending: string[][]; granted: string[]; end: Array<[string, string[]]> } {
  const records = approvalAudit().filter((r) => r.approval.id === id);
  return {
    pending: records.filter((r) => r.code === 'APPROVAL_PENDING').map((r) => r.approval.approvers),
    granted: [...new Set(records.filter((r) => r.code === 'APPROVAL_GRANTED').flatMap((r) => r.approval.approvers))].sort(),
    end: records.filter((r) => !['APPROVAL_PENDING', 'APPROVAL_GRANTED'].includes(r.code)).map((r) => [r.code, r.approval.approvers]),
  };
}

/** An enclave posting documents stamped with the broker's (movable) clock. */
function enclave(pcrs = buildPcrs()): TestEnclave & { ask(names: string[]): ReturnType<TestEnclave['request']> } {
  const e = new TestEnclave(pki, broker.url, pcrs) as TestEnclave & { ask(names: string[]): ReturnType<TestEnclave['request']> };
  e.ask = (names) => e.request(names, { timestamp: now() });
  return e;
}

async function startHere(): Promise<RunningBroker> {
  return startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), extraRootPems: [pki.root.pem], rateLimits: NO_RATE_LIMITS, maxDocumentAgeSeconds: 3600 }),
    // The sweep (closing and auditing requests that ended while nobody asked) runs often here, racing the tests' own requests.
    { log: silentLogger, clock: now, approvalSweepMs: 100 },
  );
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-approval-'));
  pki = await createTestPki(Date.now());
  simulator = await NsmSimulator.create({ warn: () => {}, pki, clock: now });
  for (const [name, pem] of [['alice', false], ['bob', true], ['carol', false], ['mallory', false]] as const) keys[name] = makeKey(name, pem);
  broker = await startHere();
  brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
  const approval = ['--approval', `2-of ${keys.alice!.publicFile},${keys.bob!.publicFile},${keys.carol!.publicFile}`, '--approval-window', '1m'];
  await bind('payments', 'pay-value', approval);
  await bind('plain', 'plain-value', []);
  const sim = simulator.pcrs;
  await bind('agent-secret', 'agent-value', approval, { 0: sim[0]!, 1: sim[1]!, 2: sim[2]! });
}, 120_000);

afterAll(async () => {
  for (const a of agents) await a.close();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('keygate bind --approval', () => {
  it('stores the approvers by thumbprint (JWK and PEM public keys) with k and the window', async () => {
    const binding = (await broker.store.refresh()).bindings.get('payments')!;
    expect(binding.approval).toEqual({ required: 2, windowSeconds: 60, approvers: [keys.alice, keys.bob, keys.carol].map((k) => ({ kid: k!.kid, jwk: expect.objectContaining({ kty: 'OKP', crv: 'Ed25519' }) })) });
  });

  it('a stored approval policy whose kid is not its key\'s thumbprint, or with k > n, fails validation (the binding is denied)', async () => {
    const binding = (await broker.store.refresh()).bindings.get('plain')!;
    const approver = { kid: keys.alice!.kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: (keys.bob!.privateKey.export({ format: 'jwk' }) as { x: string }).x } };
    expect(() => parseBinding({ ...binding, approval: { required: 1, windowSeconds: 900, approvers: [approver] } })).toThrow(/approval\.approvers\[0\]\.kid: is not the RFC 7638 thumbprint/);
    const good = { kid: keys.alice!.kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: (keys.alice!.privateKey.export({ format: 'jwk' }) as { x: string }).x } };
    expect(() => parseBinding({ ...binding, approval: { required: 2, windowSeconds: 900, approvers: [good] } })).toThrow(/approval\.required: must be an integer in 1\.\.1/);
    expect(() => parseBinding({ ...binding, approval: { required: 1, windowSeconds: 900, approvers: [good, good] } })).toThrow(/must be distinct keys/);
    expect(() => parseBinding({ ...binding, approval: { required: 1, windowSeconds: 30, approvers: [good] } })).toThrow(/windowSeconds/);
    expect(parseBinding({ ...binding, approval: { required: 1, windowSeconds: 900, approvers: [good] } }).approval?.approvers[0]?.kid).toBe(keys.alice!.kid);
  });

  it('refuses k > n, a key listed twice, a window out of bounds, and a window without --approval', async () => {
    const a = keys.alice!.publicFile;
    const b = keys.bob!.publicFile;
    for (const [flags, message] of [
      [['--approval', `3-of ${a},${b}`], /K must be 1\.\.2/],
      [['--approval', `0-of ${a},${b}`], /K must be 1\.\.2/],
      // The same key twice (once as the private JWK's public half) counts as one approver: refused.
      [['--approval', `2-of ${a},${keys.alice!.privateFile}`], /distinct keys/],
      [['--approval', `1-of ${a}`, '--approval-window', '10s'], /1m\.\.7d/],
      [['--approval', `1-of ${a}`, '--approval-window', '8d'], /1m\.\.7d/],
      [['--approval-window', '15m'], /needs --approval/],
      [['--approval', `two-of ${a}`], /K-of FILE/],
    ] as const) {
      const r = await cli(['bind', 'refused', ...pcrFlags(TEST_PCRS), '--value-stdin', ...flags, ...storeFlags()], 'x');
      expect(r.status, r.stderr).toBe(2);
      expect(r.stderr).toMatch(message);
    }
    expect((await broker.store.refresh()).bindings.has('refused')).toBe(false);
  });
});

describe('release requests for a secret that needs approval (HTTP API + CLI)', () => {
  it('k-of-n: pending (202, nothing released for any name), a key counts once, a non-approver and a signature over another request are refused, then released once', async () => {
    const e = enclave();
    const first = await e.ask(['payments', 'plain']);
    expect(first.status).toBe(202);
    const body = first.body as unknown as Pending;
    expect(body.error.code).toBe('APPROVAL_PENDING');
    expect(first.body.secrets).toBeUndefined();
    expect(body.approvals).toHaveLength(1);
    const { id, expiresAt } = body.approvals[0]!;
    expect(id).toMatch(/^apr_[0-9a-f]{32}$/);
    expect(body.approvals[0]).toMatchObject({ secret: 'payments', version: 1 });

    const listed = (await list()).find((r) => r.id === id)!;
    expect(listed).toMatchObject({ secret: 'payments', version: 1, status: 'pending', grants: [], required: 2, expiresAt });
    expect(listed.identity).toMatchObject({ moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', pcr0: h(0x11), pcr1: h(0x22), pcr2: h(0x33), instance: 'i-0123456789abcdef0' });
    expect(Date.parse(listed.expiresAt) - Date.parse(listed.createdAt)).toBe(60_000);

    // The same enclave asking again (fresh document) is still pending, on the same request.
    const again = await e.ask(['payments']);
    expect(again.status).toBe(202);
    expect((again.body as unknown as Pending).approvals[0]!.id).toBe(id);

    expect(await decide('grant', id, keys.alice!)).toMatchObject({ status: 0, json: { changed: true, grants: 1 } });
    // Alice again: counted once.
    expect(await decide('grant', id, keys.alice!)).toMatchObject({ status: 0, json: { changed: false, grants: 1 } });
    expect((await e.ask(['payments'])).status).toBe(202);
    // Mallory is no approver of payments.
    expect(await decide('grant', id, keys.mallory!)).toMatchObject({ status: 2, json: { error: { code: 'APPROVAL_NOT_APPROVER' } } });
    expect((await list()).find((r) => r.id === id)!.granted).toEqual([keys.alice!.kid]);

    // Bob's signature over another request (a different id) is refused for this one, through the store API.
    const approvals = new FileApprovalStore(join(dir, 'store'));
    const request = (await approvals.get(id))!;
    const other = { ...request, id: `apr_${'0'.repeat(32)}` };
    const snapshot = await (await FileStore.open(join(dir, 'store'))).refresh();
    const refused = await submitDecision(approvals, snapshot, id, 'grant', signDecision(other, 'grant', keys.bob!.privateKey), now()).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(ApprovalError);
    expect((refused as ApprovalError).code).toBe('APPROVAL_BAD_SIGNATURE');
    // A denial signature is not a grant either.
    const asDeny = await submitDecision(approvals, snapshot, id, 'grant', signDecision(request, 'deny', keys.bob!.privateKey), now()).catch((err: unknown) => err);
    expect((asDeny as ApprovalError).code).toBe('APPROVAL_BAD_SIGNATURE');
    expect((await e.ask(['payments'])).status).toBe(202);

    expect(await decide('grant', id, keys.bob!)).toMatchObject({ status: 0, json: { changed: true, grants: 2 } });
    const released = await e.ask(['payments', 'plain']);
    expect(released.status, JSON.stringify(released.body)).toBe(200);
    const values = await Promise.all(released.body.secrets!.map(async (s) => [s.name, valueOf(await e.open(s, brokerKey))]));
    expect(Object.fromEntries(values)).toEqual({ payments: 'pay-value', plain: 'plain-value' });

    // Single use: the next request (fresh attestation) starts a new pending request.
    const next = await e.ask(['payments']);
    expect(next.status).toBe(202);
    expect((next.body as unknown as Pending).approvals[0]!.id).not.toBe(id);
    expect((await list(true)).find((r) => r.id === id)!.status).toBe('released');
    // A grant after the release is refused: the request is closed.
    expect(await decide('grant', id, keys.carol!)).toMatchObject({ status: 2, json: { error: { code: 'APPROVAL_CLOSED' } } });

    expect(trail(id)).toEqual({
      pending: [[keys.alice!.kid, keys.bob!.kid, keys.carol!.kid]],
      granted: [keys.alice!.kid, keys.bob!.kid].sort(),
      end: [['APPROVAL_RELEASED', [keys.alice!.kid, keys.bob!.kid]]],
    });
  });

  it('single use on the file store: of concurrent requests after the grants, exactly one receives the value', async () => {
    const e = enclave();
    const id = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await decide('grant', id, keys.bob!);
    await decide('grant', id, keys.carol!);
    const answers = await Promise.all([1, 2, 3, 4, 5, 6].map(() => e.ask(['payments'])));
    expect(answers.filter((r) => r.status === 200), JSON.stringify(answers.map((r) => [r.status, r.body.error?.code]))).toHaveLength(1);
    for (const r of answers.filter((x) => x.status !== 200)) expect(['APPROVAL_CONSUMED', 'APPROVAL_PENDING']).toContain(r.body.error?.code);
  });

  it('the broker re-verifies stored grants: one written into the store with a bad signature, or by a non-approver, does not count', async () => {
    const e = enclave();
    const id = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await decide('grant', id, keys.bob!);
    const file = join(dir, 'store', 'approvals', `${id}.json`);
    const stored = JSON.parse(readFileSync(file, 'utf8')) as { grants: Array<{ kid: string; sig: string; at: string }>; rev: number };
    const request = (await new FileApprovalStore(join(dir, 'store')).get(id))!;
    const at = new Date(now()).toISOString();
    stored.grants.push({ kid: keys.alice!.kid, sig: 'A'.repeat(86), at }, { kid: keys.mallory!.kid, sig: signDecision(request, 'grant', keys.mallory!.privateKey).sig, at });
    stored.rev += 1;
    writeFileSync(file, JSON.stringify(stored));
    expect((await e.ask(['payments'])).status).toBe(202);
    expect((await list()).find((r) => r.id === id)!.granted).toEqual([keys.bob!.kid]);
    // Alice's real grant replaces the forged entry under her key (it did not verify), and counts.
    expect(await decide('grant', id, keys.alice!)).toMatchObject({ status: 0, json: { changed: true } });
    expect((await e.ask(['payments'])).status).toBe(200);
  });

  it('another enclave (other module id) does not get this enclave\'s approval', async () => {
    const e = enclave();
    const id = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await decide('grant', id, keys.alice!);
    await decide('grant', id, keys.carol!);
    const stranger = await e.request(['payments'], { timestamp: now(), moduleId: 'i-0123456789abcdef0-encffffffffffffffff' });
    expect(stranger.status).toBe(202);
    expect((stranger.body as unknown as Pending).approvals[0]!.id).not.toBe(id);
    expect((await e.ask(['payments'])).status).toBe(200);
  });

  it('deny ends the request: 403 APPROVAL_DENIED (audited with the denier), then a new request starts', async () => {
    const e = enclave();
    const id = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await decide('grant', id, keys.alice!);
    expect(await decide('deny', id, keys.carol!)).toMatchObject({ status: 0 });
    // Even with a second grant after it, the denial stands.
    expect(await decide('grant', id, keys.bob!)).toMatchObject({ status: 2, json: { error: { code: 'APPROVAL_CLOSED' } } });
    const res = await e.ask(['payments', 'plain']);
    expect(res.status).toBe(403);
    expect(res.body.error!.code).toBe('APPROVAL_DENIED');
    expect(res.body.secrets).toBeUndefined();
    await eventually(
      () => trail(id),
      (t) => expect(t).toEqual({ pending: [[keys.alice!.kid, keys.bob!.kid, keys.carol!.kid]], granted: [keys.alice!.kid], end: [['APPROVAL_DENIED', [keys.carol!.kid]]] }),
    );
    const next = await e.ask(['payments']);
    expect(next.status).toBe(202);
    expect((next.body as unknown as Pending).approvals[0]!.id).not.toBe(id);
  });

  it('expiry: past the window a grant is refused and the request answers 403 APPROVAL_EXPIRED; k grants unused inside the window expire too', async () => {
    const e = enclave();
    const id = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await decide('grant', id, keys.alice!);
    offset += 61_000;
    try {
      expect(await decide('grant', id, keys.bob!)).toMatchObject({ status: 2, json: { error: { code: 'APPROVAL_EXPIRED' } } });
      const res = await e.ask(['payments']);
      expect(res.status).toBe(403);
      expect(res.body.error!.code).toBe('APPROVAL_EXPIRED');
      await eventually(() => trail(id), (t) => expect(t).toMatchObject({ granted: [keys.alice!.kid], end: [['APPROVAL_EXPIRED', []]] }));

      // Granted in time, but the enclave asks only after the window: expired, nothing released.
      const id2 = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
      expect(id2).not.toBe(id);
      await decide('grant', id2, keys.alice!);
      await decide('grant', id2, keys.bob!);
      offset += 61_000;
      const late = await e.ask(['payments']);
      expect(late.status).toBe(403);
      expect(late.body.error!.code).toBe('APPROVAL_EXPIRED');
    } finally {
      offset -= 122_000;
    }
  });

  it('an approval is for a version: a rotation after the grants voids the request (403 APPROVAL_EXPIRED), and the new version needs its own', async () => {
    const e = enclave();
    const id = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await decide('grant', id, keys.alice!);
    await decide('grant', id, keys.bob!);
    const rotated = await cli(['rotate', 'payments', '--value-stdin', ...storeFlags()], 'pay-value-2');
    expect(rotated.status, rotated.stderr).toBe(0);
    // The approval policy is kept by the rotation.
    expect((await broker.store.refresh()).bindings.get('payments')!.approval?.required).toBe(2);
    expect((await list(true)).find((r) => r.id === id)!.status).toBe('stale');
    const res = await e.ask(['payments']);
    expect(res.status).toBe(403);
    expect(res.body.error!.code).toBe('APPROVAL_EXPIRED');
    const next = await e.ask(['payments']);
    expect(next.status).toBe(202);
    expect((next.body as unknown as Pending).approvals[0]).toMatchObject({ version: 2 });
    // A re-bind without --approval keeps the requirement.
    await bind('payments', 'pay-value-3', []);
    expect((await broker.store.refresh()).bindings.get('payments')!.approval?.required).toBe(2);
    // ... and voids the open request of version 2 as well.
    const afterRebind = await e.ask(['payments']);
    expect(afterRebind.body.error!.code).toBe('APPROVAL_EXPIRED');
  });

  it('the signed statement is the documented canonical JSON array', () => {
    const statement = approvalStatement(
      { id: 'apr_00', secret: 's', version: 3, identity: { moduleId: 'm', pcr0: 'a', pcr1: 'b', pcr2: 'c', instance: null }, createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2026-01-01T00:15:00.000Z' },
      'grant',
    );
    expect(statement).toBe('["keygate-approval-v1","grant","apr_00","s",3,"m","a","b","c",null,"2026-01-01T00:00:00.000Z","2026-01-01T00:15:00.000Z"]');
  });
});

describe('the agent: getSecret on a secret that needs approval', () => {
  async function agent(): Promise<SecretAgent> {
    const a = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: simulator.client(), wallClock: now });
    agents.push(a);
    return a;
  }

  /** The id of the open request of the simulator's enclave, once the broker has created it. */
  async function openRequest(exclude: ReadonlySet<string> = new Set()): Promise<string> {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const found = (await list()).find((r) => r.secret === 'agent-secret' && r.identity.moduleId === simulator.moduleId && !exclude.has(r.id));
      if (found) return found.id;
      if (Date.now() > deadline) throw new Error('no pending request appeared');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('resolves once k approvers have granted (re-attesting while pending)', async () => {
    const a = await agent();
    const value = a.getSecret('agent-secret', { approvalTimeoutMs: 120_000, approvalPollMs: 50, approvalMaxPollMs: 200 });
    const id = await openRequest();
    await decide('grant', id, keys.carol!);
    await decide('grant', id, keys.bob!);
    expect(await value).toBe('agent-value');
    expect(a.stats.attestations).toBeGreaterThanOrEqual(2);
  });

  it('fails with APPROVAL_PENDING after the caller\'s timeout (default 0: at once), APPROVAL_DENIED on a denial, APPROVAL_EXPIRED past the window', async () => {
    const a = await agent();
    expect((await errorOf(a.getSecret('agent-secret'))).code).toBe('APPROVAL_PENDING');
    expect((await errorOf(a.getSecret('agent-secret', { approvalTimeoutMs: 300, approvalPollMs: 50 }))).code).toBe('APPROVAL_PENDING');

    const id = await openRequest();
    const denied = a.getSecret('agent-secret', { approvalTimeoutMs: 120_000, approvalPollMs: 50, approvalMaxPollMs: 200 });
    await decide('deny', id, keys.alice!);
    expect((await errorOf(denied)).code).toBe('APPROVAL_DENIED');

    expect((await errorOf(a.getSecret('agent-secret'))).code).toBe('APPROVAL_PENDING');
    const id2 = await openRequest(new Set([id]));
    offset += 61_000;
    try {
      expect((await errorOf(a.getSecret('agent-secret', { approvalTimeoutMs: 120_000, approvalPollMs: 50 }))).code).toBe('APPROVAL_EXPIRED');
      expect((await list(true)).find((r) => r.id === id2)!.status).toBe('expired');
    } finally {
      offset -= 61_000;
    }
  });

  it('a forged 202 (or denial) from the relay only delays or fails the call: no value is ever accepted from it', async () => {
    let answer = { status: 202, body: { error: { code: 'APPROVAL_PENDING', message: 'forged' }, approvals: [{ id: `apr_${'1'.repeat(32)}`, secret: 'agent-secret', version: 1, expiresAt: new Date(now() + 60_000).toISOString() }] } } as { status: number; body: unknown };
    const relay: Server = createServer((req, res) => {
      if (req.url === '/v1/challenge') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ nonce: Buffer.alloc(32, 7).toString('base64'), expiresAt: now() + 30_000 }));
        return;
      }
      req.resume();
      req.on('end', () => res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body)));
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    try {
      const a = await createAgent({ brokerUrl: `http://127.0.0.1:${(relay.address() as AddressInfo).port}`, brokerKey, nsm: simulator.client(), wallClock: now });
      agents.push(a);
      expect((await errorOf(a.getSecret('agent-secret', { approvalTimeoutMs: 300, approvalPollMs: 50 }))).code).toBe('APPROVAL_PENDING');
      answer = { status: 403, body: { error: { code: 'APPROVAL_DENIED', message: 'forged' } } };
      expect((await errorOf(a.getSecret('agent-secret', { approvalTimeoutMs: 300, approvalPollMs: 50 }))).code).toBe('APPROVAL_DENIED');
      // A 200 with a value not sealed for this request is refused as ever.
      answer = { status: 200, body: { secrets: [{ name: 'agent-secret', version: 1, ttlSeconds: 60, jwe: 'a.b.c.d.e' }] } };
      expect((await errorOf(a.getSecret('agent-secret', { approvalTimeoutMs: 300, approvalPollMs: 50 }))).code).toBe('UNTRUSTED_RESPONSE');
    } finally {
      await new Promise<void>((r) => relay.close(() => r()));
    }
  });
});

describe('requests that end while nobody asks', () => {
  it('the broker\'s sweep closes and audits a denial and an expiry the enclave never asks about; the enclave\'s next request is told once', async () => {
    const e = enclave();
    const denied = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await decide('grant', denied, keys.bob!);
    // The grant is audited while the request is still open (by the sweep), not only when it ends.
    await eventually(() => trail(denied), (t) => expect(t).toEqual({ pending: [[keys.alice!.kid, keys.bob!.kid, keys.carol!.kid]], granted: [keys.bob!.kid], end: [] }));
    await decide('deny', denied, keys.alice!);
    await eventually(() => trail(denied), (t) => expect(t).toEqual({ pending: [[keys.alice!.kid, keys.bob!.kid, keys.carol!.kid]], granted: [keys.bob!.kid], end: [['APPROVAL_DENIED', [keys.alice!.kid]]] }));
    // Audited once: the sweep marked the grant, so the denial did not audit it again.
    expect(approvalAudit().filter((r) => r.approval.id === denied && r.code === 'APPROVAL_GRANTED')).toHaveLength(1);
    expect((await list(true)).find((r) => r.id === denied)!.status).toBe('denied');
    // Told once, then a new request starts.
    expect((await e.ask(['payments'])).body.error!.code).toBe('APPROVAL_DENIED');
    const expiring = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    expect(expiring).not.toBe(denied);
    offset += 61_000;
    try {
      await eventually(() => trail(expiring), (t) => expect(t).toEqual({ pending: [[keys.alice!.kid, keys.bob!.kid, keys.carol!.kid]], granted: [], end: [['APPROVAL_EXPIRED', []]] }));
      expect((await e.ask(['payments'])).body.error!.code).toBe('APPROVAL_EXPIRED');
      expect((await e.ask(['payments'])).status).toBe(202);
    } finally {
      offset -= 61_000;
    }
  });
});

describe('restart', () => {
  it('a pending request survives a new broker on the same store, and is then granted and released', async () => {
    const e = enclave();
    const id = ((await e.ask(['payments'])).body as unknown as Pending).approvals[0]!.id;
    await broker.close();
    broker = await startHere();
    const e2 = new TestEnclave(pki, broker.url, buildPcrs());
    expect((await list()).map((r) => r.id)).toContain(id);
    const pending = await e2.request(['payments'], { timestamp: now() });
    expect(pending.status).toBe(202);
    expect((pending.body as unknown as Pending).approvals[0]!.id).toBe(id);
    await decide('grant', id, keys.alice!);
    await decide('grant', id, keys.bob!);
    const res = await e2.request(['payments'], { timestamp: now() });
    expect(res.status).toBe(200);
    expect(valueOf(await e2.open(res.body.secrets![0]!, brokerKey))).toBe('pay-value-3');
  });
});

describe('housekeeping', () => {
  it('finished requests are deleted by the sweep a retention period (7 days) past their expiry', async () => {
    const finished = (await list(true)).filter((r) => r.status === 'released').map((r) => r.id);
    expect(finished.length).toBeGreaterThan(0);
    offset += 8 * 86_400_000;
    try {
      const approvals = new FileApprovalStore(join(dir, 'store'));
      const deadline = Date.now() + 60_000;
      let left = finished;
      while (left.length && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        left = (await approvals.list()).map((r) => r.id).filter((id) => finished.includes(id));
      }
      expect(left).toEqual([]);
    } finally {
      offset -= 8 * 86_400_000;
    }
  });
});
