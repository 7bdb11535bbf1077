/**
 * Human approval under attack (file store, real HTTP API and CLI): an approver key listed twice under two
 * kids, a request file whose window was widened before the approvers signed it, a planted request carrying
 * terminal escapes for `keygate approvals list`, an enclave identity that cannot be stored, and one parent
 * instance flooding the approval store with open requests.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBroker, type RunningBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';
import { NO_RATE_LIMITS } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { TestEnclave, buildPcrs, h } from '../support/enclave.js';
import { cli } from '../support/cli.js';
import { FileApprovalStore } from '../../broker/approval/file-approvals.js';
import { approverKid, signDecision } from '../../broker/approval/operations.js';
import { ApprovalError, type ApprovalRequest } from '../../broker/approval/request.js';
import { ApprovalGate, APPROVAL_RETENTION_MS, MAX_OPEN_APPROVALS_PER_INSTANCE, UNGRANTED_RETENTION_MS } from '../../broker/approval/gate.js';
import { ed25519Thumbprint, parseApprovalPolicy } from '../../broker/policy/schema.js';
import { startApprovalSweeper } from '../../broker/approval/sweeper.js';
import type { AuditSink } from '../../broker/audit/sink.js';
import type { Binding } from '../../broker/policy/types.js';

let dir: string;
let pki: TestPki;
let broker: RunningBroker;
let offset = 0;
const now = (): number => Date.now() + offset;

interface Approver {
  readonly privateKey: KeyObject;
  readonly kid: string;
  readonly privateFile: string;
  readonly publicFile: string;
}
const keys: Record<string, Approver> = {};

function makeKey(name: string): Approver {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const privateFile = join(dir, `${name}.jwk`);
  const publicFile = join(dir, `${name}.pub`);
  writeFileSync(privateFile, JSON.stringify(privateKey.export({ format: 'jwk' })));
  writeFileSync(publicFile, JSON.stringify(publicKey.export({ format: 'jwk' })));
  return { privateKey, kid: approverKid(privateKey), privateFile, publicFile };
}

const storeDir = (): string => join(dir, 'store');
const storeFlags = (): string[] => ['--store', storeDir(), '--state', join(dir, 'state')];
const TEST_PCRS = { 0: h(0x11), 1: h(0x22), 2: h(0x33) };
const requestFile = (id: string): string => join(storeDir(), 'approvals', `${id}.json`);
const readRequest = (id: string): ApprovalRequest => JSON.parse(readFileSync(requestFile(id), 'utf8')) as ApprovalRequest;
const writeRequest = (r: ApprovalRequest): void => writeFileSync(requestFile(r.id), `${JSON.stringify(r, null, 2)}\n`);

function enclave(): TestEnclave & { ask(names: string[], moduleId?: string): ReturnType<TestEnclave['request']> } {
  const e = new TestEnclave(pki, broker.url, buildPcrs()) as TestEnclave & { ask(names: string[], moduleId?: string): ReturnType<TestEnclave['request']> };
  e.ask = (names, moduleId) => e.request(names, { timestamp: now(), ...(moduleId ? { moduleId } : {}) });
  return e;
}

type Pending = { error: { code: string }; approvals: Array<{ id: string }> };

/** `e` asks for `payments` (as `moduleId`): the answer must be 202, pending approval; the approval request's id. */
async function pendingId(e: ReturnType<typeof enclave>, moduleId?: string): Promise<string> {
  const first = await e.ask(['payments'], moduleId);
  expect(first.status).toBe(202);
  return (first.body as unknown as Pending).approvals[0]!.id;
}

/** Alice and Bob grant request `id` (2 of the 3 approvers: it is approved). */
async function grantByAliceAndBob(id: string): Promise<void> {
  for (const who of [keys.alice!, keys.bob!]) {
    const g = await cli(['approvals', 'grant', id, '--key', who.privateFile, '--json', ...storeFlags()], undefined, undefined, now);
    expect(g.status, g.stderr).toBe(0);
  }
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-approval-attacks-'));
  pki = await createTestPki(Date.now());
  for (const name of ['alice', 'bob', 'carol']) keys[name] = makeKey(name);
  broker = await startBroker(
    resolveConfig({ listen: '127.0.0.1:0', store: storeDir(), stateDir: join(dir, 'state'), extraRootPems: [pki.root.pem], rateLimits: NO_RATE_LIMITS, maxDocumentAgeSeconds: 3600 }),
    { log: silentLogger, clock: now, approvalSweepMs: 3_600_000 },
  );
  const r = await cli(['bind', 'payments', '--pcr0', TEST_PCRS[0], '--pcr1', TEST_PCRS[1], '--pcr2', TEST_PCRS[2], '--value-stdin', '--approval', `2-of ${keys.alice!.publicFile},${keys.bob!.publicFile},${keys.carol!.publicFile}`, '--approval-window', '1m', ...storeFlags()], 'pay-value');
  expect(r.status, r.stderr).toBe(0);
}, 120_000);

afterAll(async () => {
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('approval attacks', () => {
  it('one key listed twice under two kids (a non-canonical base64url x of the same 32 bytes) is refused: it would count twice', () => {
    const x = (keys.alice!.privateKey.export({ format: 'jwk' }) as { x: string }).x;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    // The last of 43 characters carries 2 unused bits: flipping the lowest gives another string, the same key.
    const twin = x.slice(0, -1) + alphabet[alphabet.indexOf(x.at(-1)!) ^ 1]!;
    expect(Buffer.from(twin, 'base64url').equals(Buffer.from(x, 'base64url'))).toBe(true);
    const approvers = [x, twin].map((v) => ({ kid: ed25519Thumbprint(v), jwk: { kty: 'OKP', crv: 'Ed25519', x: v } }));
    expect(approvers[0]!.kid).not.toBe(approvers[1]!.kid);
    expect(() => parseApprovalPolicy({ required: 2, windowSeconds: 900, approvers })).toThrow(/approval\.approvers\[1\]\.jwk\.x: must be the canonical base64url of a 32-byte key/);
  });

  it('a request file whose window was widened (or whose creation was moved ahead) is judged by the binding\'s window: signed grants do not outlive it', async () => {
    const e = enclave();
    const id = await pendingId(e);
    // A store writer (no approver) widens the window to 7 days before anyone signs.
    const planted = readRequest(id);
    const widened: ApprovalRequest = { ...planted, expiresAt: new Date(Date.parse(planted.createdAt) + 7 * 86_400_000).toISOString() };
    writeRequest(widened);
    // The CLI refuses to sign it: it is past the binding's window already as far as the policy goes.
    const cliGrant = await cli(['approvals', 'grant', id, '--key', keys.alice!.privateFile, '--json', ...storeFlags()], undefined, undefined, () => Date.parse(planted.createdAt) + 120_000);
    expect(cliGrant.status).toBe(2);
    expect(JSON.parse(cliGrant.stdout)).toMatchObject({ error: { code: 'APPROVAL_EXPIRED' } });
    // Approvers who signed the widened statement anyway (both signatures verify over it).
    const at = new Date(now()).toISOString();
    writeRequest({ ...widened, grants: [keys.alice!, keys.bob!].map((k) => ({ ...signDecision(widened, 'grant', k.privateKey), at })) });
    // Two minutes later (the binding's window is one): nothing is released.
    offset += 120_000;
    try {
      const late = await e.ask(['payments']);
      expect(late.body.secrets).toBeUndefined();
      expect(late.body.error?.code).toBe('APPROVAL_EXPIRED');

      // createdAt moved an hour ahead (the window's length kept): also not usable.
      const second = await e.ask(['payments']);
      expect(second.status).toBe(202);
      const id2 = (second.body as unknown as Pending).approvals[0]!.id;
      const r2 = readRequest(id2);
      const ahead: ApprovalRequest = { ...r2, createdAt: new Date(Date.parse(r2.createdAt) + 3_600_000).toISOString(), expiresAt: new Date(Date.parse(r2.expiresAt) + 3_600_000).toISOString() };
      writeRequest({ ...ahead, grants: [keys.alice!, keys.bob!].map((k) => ({ ...signDecision(ahead, 'grant', k.privateKey), at })) });
      const moved = await e.ask(['payments']);
      expect(moved.body.secrets).toBeUndefined();
      expect(moved.body.error?.code).toBe('APPROVAL_EXPIRED');
    } finally {
      offset -= 120_000;
    }
  });

  it('a revocation voids approvals granted before it: revoke then unrevoke (same version) does not bring an approved request back', async () => {
    const e = enclave();
    const moduleId = 'i-0123456789abcdef0-enc00000000000000bb';
    const id = await pendingId(e, moduleId);
    await grantByAliceAndBob(id);
    for (const cmd of ['revoke', 'unrevoke']) {
      const r = await cli([cmd, 'payments', ...storeFlags()]);
      expect(r.status, r.stderr).toBe(0);
    }
    const after = await e.ask(['payments'], moduleId);
    expect(after.body.secrets).toBeUndefined();
    expect(after.body.error?.code).toBe('APPROVAL_EXPIRED');
    // A grant on it is refused as stale; the next request starts a new one.
    const late = await cli(['approvals', 'grant', id, '--key', keys.carol!.privateFile, '--json', ...storeFlags()], undefined, undefined, now);
    expect(JSON.parse(late.stdout)).toMatchObject({ error: { code: 'APPROVAL_STALE' } });
    const next = await e.ask(['payments'], moduleId);
    expect(next.status).toBe(202);
    expect((next.body as unknown as Pending).approvals[0]!.id).not.toBe(id);
  });

  it('revoking the enclave\'s instance closes its approved request at the next sweep: unrevoking it does not bring the approval back', async () => {
    const e = enclave();
    const moduleId = 'i-0cccccccccccccccc-enc00000000000000cc';
    const id = await pendingId(e, moduleId);
    await grantByAliceAndBob(id);
    const revoked = await cli(['revoke', '--instance', 'i-0cccccccccccccccc', ...storeFlags()]);
    expect(revoked.status, revoked.stderr).toBe(0);
    const records: string[] = [];
    const audit = { append: async (r: { code: string }) => void records.push(r.code), appendRefusal: async () => {}, appendAdmin: async () => {} } as unknown as AuditSink;
    const sweeper = startApprovalSweeper({ gate: new ApprovalGate(new FileApprovalStore(storeDir())), store: broker.store, audit, clock: now, log: silentLogger, intervalMs: 3_600_000 });
    try {
      await sweeper.runOnce();
    } finally {
      sweeper.stop();
    }
    expect(readRequest(id).state).toBe('expired');
    expect(records).toContain('APPROVAL_EXPIRED');
    const unrevoked = await cli(['unrevoke', '--instance', 'i-0cccccccccccccccc', ...storeFlags()]);
    expect(unrevoked.status, unrevoked.stderr).toBe(0);
    const after = await e.ask(['payments'], moduleId);
    expect(after.body.secrets).toBeUndefined();
    expect(after.body.error?.code).toBe('APPROVAL_EXPIRED');
  });

  it('grant --digest pins the request the approver reviewed: a file rewritten for another enclave between list and grant is not signed', async () => {
    const e = enclave();
    const moduleId = 'i-0123456789abcdef0-enc00000000000000dd';
    const id = await pendingId(e, moduleId);
    const listed = await cli(['approvals', 'list', '--json', ...storeFlags()], undefined, undefined, now);
    const view = (JSON.parse(listed.stdout) as Array<{ id: string; digest: string }>).find((v) => v.id === id)!;
    expect(view.digest).toMatch(/^[0-9a-f]{64}$/);
    const text = await cli(['approvals', 'list', ...storeFlags()], undefined, undefined, now);
    expect(text.stdout).toContain(`digest ${view.digest.slice(0, 16)}`);
    // A store writer points the request at another enclave (same image, another instance) before the grant.
    const r = readRequest(id);
    writeRequest({ ...r, identity: { ...r.identity, moduleId: 'i-0eeeeeeeeeeeeeeee-enc00000000000000ee', instance: 'i-0eeeeeeeeeeeeeeee' } });
    const refused = await cli(['approvals', 'grant', id, '--key', keys.alice!.privateFile, '--digest', view.digest.slice(0, 16), '--json', ...storeFlags()], undefined, undefined, now);
    expect(refused.status).toBe(2);
    expect(JSON.parse(refused.stdout)).toMatchObject({ error: { code: 'APPROVAL_CHANGED' } });
    expect(readRequest(id).grants).toEqual([]);
    // Unchanged, the same digest is accepted, and the answer names the enclave that was signed for.
    writeRequest(r);
    const ok = await cli(['approvals', 'grant', id, '--key', keys.alice!.privateFile, '--digest', view.digest.slice(0, 16), ...storeFlags()], undefined, undefined, now);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(moduleId);
    // Too short a prefix pins nothing: a usage error.
    const short = await cli(['approvals', 'grant', id, '--key', keys.bob!.privateFile, '--digest', view.digest.slice(0, 4), ...storeFlags()], undefined, undefined, now);
    expect(short.status).toBe(2);
    expect(short.stderr).toMatch(/--digest/);
  });

  it('a planted request carrying terminal escapes in its identity authorises nothing and never reaches `approvals list`', async () => {
    const e = enclave();
    const id = await pendingId(e, 'i-0123456789abcdef0-enc00000000000000aa');
    const r = readRequest(id);
    writeRequest({ ...r, identity: { ...r.identity, moduleId: `${r.identity.moduleId}\u001b[2K\u001b[1A\rlooks-harmless`, instance: `i-0\u001b]0;x\u0007` } });
    const listed = await cli(['approvals', 'list', '--all', ...storeFlags()], undefined, undefined, now);
    expect(listed.status, listed.stderr).toBe(0);
    // eslint-disable-next-line no-control-regex
    expect(listed.stdout).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f]/);
    expect(listed.stdout).not.toContain(id);
    const got = await new FileApprovalStore(storeDir()).get(id).catch((err: unknown) => err);
    expect((got as ApprovalError).code).toBe('APPROVAL_STORE_INVALID');
  });

  it('an enclave identity that cannot be stored (module id too long) is refused, not stored again on every request', async () => {
    const e = enclave();
    const before = readdirSync(join(storeDir(), 'approvals')).length;
    const moduleId = `i-0123456789abcdef0-enc${'a'.repeat(300)}`;
    for (let i = 0; i < 3; i++) {
      const r = await e.ask(['payments'], moduleId);
      expect(r.body.secrets).toBeUndefined();
      expect(r.body.error?.code).toBe('STORE_UNAVAILABLE');
    }
    expect(readdirSync(join(storeDir(), 'approvals')).length).toBe(before);
  });

  it('one parent instance cannot open more than MAX_OPEN_APPROVALS_PER_INSTANCE requests (each enclave launch is a new module id); other instances still can', async () => {
    const sub = mkdtempSync(join(tmpdir(), 'keygate-approval-flood-'));
    try {
      const gate = new ApprovalGate(new FileApprovalStore(sub));
      const policy = parseApprovalPolicy({ required: 1, windowSeconds: 900, approvers: [{ kid: keys.alice!.kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: (keys.alice!.privateKey.export({ format: 'jwk' }) as { x: string }).x } }] });
      const binding = { secret: 'payments', version: 1, approval: policy } as unknown as Binding;
      const identity = (instance: string, n: number): Parameters<ApprovalGate['evaluate']>[1] => ({ moduleId: `${instance}-enc${n.toString(16).padStart(16, '0')}`, pcrs: { 0: h(0x11), 1: h(0x22), 2: h(0x33) } }) as unknown as Parameters<ApprovalGate['evaluate']>[1];
      const t = Date.now();
      for (let n = 0; n < MAX_OPEN_APPROVALS_PER_INSTANCE; n++) expect((await gate.evaluate([binding], identity('i-0aaaaaaaaaaaaaaaa', n), t)).kind).toBe('pending');
      const over = await gate.evaluate([binding], identity('i-0aaaaaaaaaaaaaaaa', MAX_OPEN_APPROVALS_PER_INSTANCE), t).catch((err: unknown) => err);
      expect(over).toBeInstanceOf(ApprovalError);
      expect((over as ApprovalError).code).toBe('APPROVAL_LIMIT');
      // An enclave that already has an open request still gets it; another instance is unaffected.
      expect((await gate.evaluate([binding], identity('i-0aaaaaaaaaaaaaaaa', 0), t)).kind).toBe('pending');
      expect((await gate.evaluate([binding], identity('i-0bbbbbbbbbbbbbbbb', 0), t)).kind).toBe('pending');
      expect(readdirSync(join(sub, 'approvals')).filter((n) => n.endsWith('.json'))).toHaveLength(MAX_OPEN_APPROVALS_PER_INSTANCE + 1);
    } finally {
      rmSync(sub, { recursive: true, force: true });
    }
  });

  it('finished requests do not pile up: ungranted ones are deleted soon after their end, the rest after the retention, told to their enclave or not', async () => {
    const sub = mkdtempSync(join(tmpdir(), 'keygate-approval-retention-'));
    try {
      const approvals = new FileApprovalStore(sub);
      const gate = new ApprovalGate(approvals);
      const x = (keys.alice!.privateKey.export({ format: 'jwk' }) as { x: string }).x;
      const policy = parseApprovalPolicy({ required: 2, windowSeconds: 60, approvers: [{ kid: keys.alice!.kid, jwk: { kty: 'OKP', crv: 'Ed25519', x } }, { kid: keys.bob!.kid, jwk: { kty: 'OKP', crv: 'Ed25519', x: (keys.bob!.privateKey.export({ format: 'jwk' }) as { x: string }).x } }] });
      const t = Date.now();
      const binding = { secret: 'payments', version: 1, approval: policy, revoked: false, updatedAt: new Date(t - 1000).toISOString() } as unknown as Binding;
      const bindings = new Map([['payments', binding]]);
      const identity = (n: number): Parameters<ApprovalGate['evaluate']>[1] => ({ moduleId: `i-0aaaaaaaaaaaaaaaa-enc${n.toString(16).padStart(16, '0')}`, pcrs: { 0: h(0x11), 1: h(0x22), 2: h(0x33) } }) as unknown as Parameters<ApprovalGate['evaluate']>[1];
      // Launch-ask-vanish: each enclave asks once and never again (so it is never told its request expired).
      for (let n = 0; n < 5; n++) expect((await gate.evaluate([binding], identity(n), t)).kind).toBe('pending');
      // One of them got a grant (its story is worth keeping for approvals list --all).
      const [granted] = await approvals.list();
      const withGrant = { ...granted!, grants: [{ ...signDecision(granted!, 'grant', keys.alice!.privateKey), at: new Date(t).toISOString() }], rev: granted!.rev + 1 };
      expect(await approvals.replace(withGrant)).toBe(true);
      const files = (): number => readdirSync(join(sub, 'approvals')).filter((f) => f.endsWith('.json')).length;
      const end = t + 60_000;
      await gate.sweep(bindings, end + 1); // closes all five (expired)
      expect(files()).toBe(5);
      await gate.sweep(bindings, end + UNGRANTED_RETENTION_MS + 1_000);
      expect((await approvals.list()).map((r) => r.id)).toEqual([withGrant.id]);
      await gate.sweep(bindings, end + APPROVAL_RETENTION_MS + 1_000);
      expect(files()).toBe(0);
    } finally {
      rmSync(sub, { recursive: true, force: true });
    }
  });
});
