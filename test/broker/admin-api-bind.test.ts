/**
 * The admin HTTP API binds as the CLI binds on a store: a rule naming a stored
 * baseline (no PCR values), the IAM role (PCR3), the instance (PCR4), PCR8, an
 * EC2 tag restriction, the simulator's PCRs (--dev-pcrs), a rule added without
 * a value, and the baseline list. Through the real admin listener with real
 * JWTs, and through `keygate ... --broker-admin URL`; refusals with the codes
 * of the store path, each audited.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublicKey, generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { mintAdminToken, type AdminScope } from '../../broker/admin-api/token.js';
import { approveBaseline, type Baseline } from '../../broker/policy/baseline.js';
import { expectedPcr3, expectedPcr4 } from '../../broker/policy/decide.js';
import { putStoredBaseline } from '../../broker/ops/stored-baselines.js';
import { devBindPcrs } from '../../cli/commands/dev.js';
import { startTestBroker } from '../support/broker.js';
import { APPROVED, TestEnclave, buildPcrs, h } from '../support/enclave.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { cli } from '../support/cli.js';

const ROLE = 'arn:aws:iam::123456789012:role/payments-parent';
const INSTANCE = 'i-0123456789abcdef0';
const PCR8 = h(0x88);
const VALUE = 'admin-bind-parity-value-4e1f';

let dir: string;
let broker: RunningBroker;
let pki: TestPki;
let apiKey: KeyObject;
let approverKey: KeyObject;
let keyFile: string;

const baseline = (name: string, pcrs: Baseline['pcrs'] = { ...APPROVED }): Baseline => ({
  formatVersion: 1,
  name,
  pcrs,
  builder: 'ci',
  createdAt: new Date().toISOString(),
  source: 'nitro-cli',
  approvals: [],
});

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keygate-adminbind-'));
  pki = await createTestPki(Date.now());
  apiKey = generateKeyPairSync('ed25519').privateKey;
  approverKey = generateKeyPairSync('ed25519').privateKey;
  keyFile = join(dir, 'admin-api.jwk');
  await writeFile(keyFile, JSON.stringify(await exportJWK(apiKey)));
  await writeFile(join(dir, 'api.pub.jwk'), JSON.stringify(await exportJWK(createPublicKey(apiKey))));
  await writeFile(join(dir, 'approver.pub.jwk'), JSON.stringify(await exportJWK(createPublicKey(approverKey))));
  broker = await startTestBroker(join(dir, 'b'), [pki.root.pem], {
    adminListen: '127.0.0.1:0',
    adminApiKeys: [join(dir, 'api.pub.jwk')],
    adminKeys: [join(dir, 'approver.pub.jwk')],
  });
  // web-1: the approved test build; web-2: recorded, not approved.
  const web1 = baseline('web-1');
  await putStoredBaseline(broker.store, { ...web1, approvals: [await approveBaseline(web1, approverKey, new Date())] });
  await putStoredBaseline(broker.store, baseline('web-2', { 0: h(0x12), 1: h(0x22), 2: h(0x33) }));
}, 60_000);

afterAll(async () => {
  await broker?.close();
  await rm(dir, { recursive: true, force: true });
});

const token = (scopes: AdminScope[]): Promise<string> => mintAdminToken({ key: apiKey, scopes, audience: 'keygate-admin', ttlSeconds: 60, now: Date.now(), jti: randomUUID() });

/** One request to the real admin listener. */
async function call(method: string, path: string, scopes: AdminScope[], body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${broker.adminUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${await token(scopes)}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
const codeOf = (r: { json: Record<string, unknown> }): unknown => (r.json.error as { code?: unknown } | undefined)?.code;
const reasonOf = (r: { json: Record<string, unknown> }): unknown => (r.json.error as { reason?: unknown } | undefined)?.reason;

async function adminRecords(): Promise<Array<{ action: string; outcome: string; secret: string | null; versionBefore: number | null; versionAfter: number | null }>> {
  const text = await readFile(join(dir, 'b', 'state', 'audit.jsonl'), 'utf8');
  return text.trim().split('\n').map((l) => JSON.parse(l) as { type: string } & Awaited<ReturnType<typeof adminRecords>>[number]).filter((r) => r.type === 'admin' && r.outcome !== 'pending');
}

const value = (text = VALUE) => ({ text });

describe('admin API bind: what the CLI can bind on a store', () => {
  it('a rule naming a stored baseline (no PCR values) with the IAM role (PCR3) and the instance (PCR4); released only to that role and instance', async () => {
    const r = await call('PUT', '/v1/admin/secrets/pay', ['secrets:write'], { value: value(), allow: [{ baseline: 'web-1', iamRole: ROLE, pcrs: { 4: expectedPcr4(INSTANCE) } }] });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(broker.store.snapshot().bindings.get('pay')!.allow).toEqual([{ pcrs: { ...APPROVED, 3: expectedPcr3(ROLE), 4: expectedPcr4(INSTANCE) }, baseline: 'web-1' }]);
    expect(r.json.baselines).toEqual([{ name: 'web-1', valid: 1, required: 1, adminKeys: 1, approved: true }]);
    // The broker enforces the rule: the right role and instance get it, another role does not.
    const pcrs = buildPcrs();
    pcrs.set(3, Buffer.from(expectedPcr3(ROLE), 'hex'));
    pcrs.set(4, Buffer.from(expectedPcr4(INSTANCE), 'hex'));
    const ok = await new TestEnclave(pki, broker.url, pcrs).request(['pay'], { moduleId: `${INSTANCE}-enc0123456789abcdef` });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    pcrs.set(3, Buffer.from(expectedPcr3('arn:aws:iam::123456789012:role/other'), 'hex'));
    const otherRole = await new TestEnclave(pki, broker.url, pcrs).request(['pay'], { moduleId: `${INSTANCE}-enc0123456789abcdef` });
    expect([otherRole.status, otherRole.body.error?.code]).toEqual([403, 'POLICY_DENIED']);
  });

  it('a rule added without a value (POST .../rules): the value and version stay, an unapproved baseline is reported', async () => {
    await call('PUT', '/v1/admin/secrets/web', ['secrets:write'], { value: value(), allow: [{ baseline: 'web-1' }] });
    const before = broker.store.snapshot().bindings.get('web')!;
    const r = await call('POST', '/v1/admin/secrets/web/rules', ['secrets:write'], { baseline: 'web-2' });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json.added).toBe(true);
    expect(r.json.baselines).toEqual([{ name: 'web-2', valid: 0, required: 1, adminKeys: 1, approved: false }]);
    const after = broker.store.snapshot().bindings.get('web')!;
    expect([after.version, after.ciphertext]).toEqual([before.version, before.ciphertext]);
    expect(after.allow.map((a) => a.baseline)).toEqual(['web-1', 'web-2']);
    const again = await call('POST', '/v1/admin/secrets/web/rules', ['secrets:write'], { baseline: 'web-2' });
    expect([again.status, again.json.added]).toEqual([200, false]);
    const last = (await adminRecords()).filter((x) => x.action === 'add-rule');
    expect(last.map((x) => [x.outcome, x.secret, x.versionBefore, x.versionAfter])).toEqual([['ok', 'web', 1, 1], ['ok', 'web', 1, 1]]);
  });

  it('PCR8 and an EC2 tag restriction', async () => {
    const r = await call('PUT', '/v1/admin/secrets/signed', ['secrets:write'], { value: value(), allow: [{ pcrs: { ...APPROVED, 8: PCR8.toUpperCase() } }], instanceTag: { key: 'role', value: 'payments' } });
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const b = broker.store.snapshot().bindings.get('signed')!;
    expect(b.allow).toEqual([{ pcrs: { ...APPROVED, 8: PCR8 } }]);
    expect(b.instances).toEqual({ ec2Tag: { key: 'role', value: 'payments' } });
  });

  it('GET /v1/admin/baselines lists the stored baselines with their approval status (scope secrets:read), audited', async () => {
    const r = await call('GET', '/v1/admin/baselines', ['secrets:read']);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    expect(r.json).toMatchObject({ adminKeys: 1, approvalsRequired: 1 });
    expect((r.json.baselines as Array<Record<string, unknown>>).map((b) => [b.name, b.valid, b.approved, b.revoked])).toEqual([['web-1', 1, true, false], ['web-2', 0, false, false]]);
    expect((await adminRecords()).at(-1)).toMatchObject({ action: 'baseline-list', outcome: 'ok' });
  });

  it('refusals carry the store path\'s codes and are audited: wrong scope, tag form, unknown baseline, bad role, mixed rules', async () => {
    const bind = (over: Record<string, unknown>) => ({ value: value(), allow: [{ pcrs: { ...APPROVED } }], ...over });
    const cases: Array<[string, string, string, AdminScope[], unknown, number, string, string?]> = [
      ['bind with secrets:read', 'PUT', '/v1/admin/secrets/x', ['secrets:read'], bind({}), 403, 'FORBIDDEN', 'SCOPE_MISSING'],
      ['add-rule with revocations:write', 'POST', '/v1/admin/secrets/web/rules', ['revocations:write'], { baseline: 'web-1' }, 403, 'FORBIDDEN', 'SCOPE_MISSING'],
      ['baseline list with secrets:write', 'GET', '/v1/admin/baselines', ['secrets:write'], undefined, 403, 'FORBIDDEN', 'SCOPE_MISSING'],
      ['a tag as a string', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ instanceTag: 'role=payments' }), 400, 'BAD_REQUEST'],
      ['a tag with an extra field', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ instanceTag: { key: 'role', value: 'p', id: 1 } }), 400, 'BAD_REQUEST'],
      ['a tag with an empty key', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ instanceTag: { key: '', value: 'p' } }), 400, 'SCHEMA_INVALID'],
      ['a tag key with a control character', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ instanceTag: { key: 'ro\nle', value: 'p' } }), 400, 'SCHEMA_INVALID'],
      ['a tag and instance ids', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ instanceTag: { key: 'role', value: 'p' }, instances: [INSTANCE] }), 409, 'ADMIN_REFUSED'],
      ['an unknown baseline (bind)', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ baseline: 'nope' }] }), 404, 'BASELINE_NOT_FOUND'],
      ['an unknown baseline (add-rule)', 'POST', '/v1/admin/secrets/web/rules', ['secrets:write'], { baseline: 'nope' }, 404, 'BASELINE_NOT_FOUND'],
      ['add-rule to an unbound secret', 'POST', '/v1/admin/secrets/unbound/rules', ['secrets:write'], { baseline: 'web-1' }, 404, 'NOT_BOUND'],
      ['an IAM role that is not an ARN', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ baseline: 'web-1', iamRole: 'payments' }] }), 400, 'INPUT_INVALID'],
      ['an IAM role and PCR3', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ baseline: 'web-1', iamRole: ROLE, pcrs: { 3: h(0x03) } }] }), 400, 'BAD_REQUEST'],
      ['a baseline and image PCRs', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ baseline: 'web-1', pcrs: { 0: h(0x11) } }] }), 400, 'BAD_REQUEST'],
      ['PCRs without PCR0', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ pcrs: { 1: h(0x22), 2: h(0x33) } }] }), 400, 'SCHEMA_INVALID'],
      ['a PCR value that is not a string', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ pcrs: { ...APPROVED, 0: 7 } }] }), 400, 'BAD_REQUEST'],
      ['a PCR of the wrong length', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ pcrs: { ...APPROVED, 8: 'ab' } }] }), 400, 'SCHEMA_INVALID'],
      ['an unknown rule field', 'PUT', '/v1/admin/secrets/x', ['secrets:write'], bind({ allow: [{ pcrs: { ...APPROVED }, role: ROLE }] }), 400, 'BAD_REQUEST'],
    ];
    for (const [what, method, path, scopes, body, status, code, reason] of cases) {
      const before = (await adminRecords()).length;
      const r = await call(method, path, scopes, body);
      expect([what, r.status, codeOf(r), ...(reason ? [reasonOf(r)] : [])]).toEqual([what, status, code, ...(reason ? [reason] : [])]);
      const records = await adminRecords();
      // A scope refusal happens before anything is recorded (no principal to record); every other refusal is an audit record with its code.
      if (code === 'FORBIDDEN') expect(records.length).toBe(before);
      else expect([what, records.length, records.at(-1)!.outcome]).toEqual([what, before + 1, code]);
    }
    expect(broker.store.snapshot().bindings.has('x')).toBe(false);
    // Refused before anything is recorded (text in a URL could be a pasted value): a query string, an invalid name.
    const before = (await adminRecords()).length;
    for (const [method, path, body] of [['GET', '/v1/admin/baselines?name=hunter2', undefined], ['POST', '/v1/admin/secrets/hunter2%20pass/rules', { baseline: 'web-1' }]] as const) {
      const r = await call(method, path, ['secrets:read', 'secrets:write'], body);
      expect([path, r.status, codeOf(r)]).toEqual([path, 400, 'BAD_REQUEST']);
    }
    expect((await adminRecords()).length).toBe(before);
    expect(await readFile(join(dir, 'b', 'state', 'audit.jsonl'), 'utf8')).not.toContain('hunter2');
  });
});

describe('keygate bind --broker-admin: the CLI\'s flags through the admin API', () => {
  const via = (): string[] => ['--broker-admin', broker.adminUrl!, '--key', keyFile];

  it('--baseline NAME --iam-role ARN --pcr4, --pcr8, --instance-tag, --dev-pcrs, and --baseline without a value', async () => {
    let r = await cli(['bind', 'c-pay', '--baseline', 'web-1', '--iam-role', ROLE, '--pcr4', expectedPcr4(INSTANCE), '--value-stdin', ...via()], VALUE, dir);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toContain('bound c-pay version 1');
    expect(broker.store.snapshot().bindings.get('c-pay')!.allow).toEqual(broker.store.snapshot().bindings.get('pay')!.allow);

    r = await cli(['bind', 'c-signed', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--pcr8', PCR8, '--instance-tag', 'role=pay=ments', '--value-stdin', ...via()], VALUE, dir);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(broker.store.snapshot().bindings.get('c-signed')).toMatchObject({ allow: [{ pcrs: { ...APPROVED, 8: PCR8 } }], instances: { ec2Tag: { key: 'role', value: 'pay=ments' } } });

    r = await cli(['bind', 'c-dev', '--dev', '--dev-pcrs', '--value-stdin', ...via()], VALUE, dir);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(broker.store.snapshot().bindings.get('c-dev')!.allow).toEqual([{ pcrs: devBindPcrs() }]);

    // No value: a rule added (the unapproved baseline warned about, as on the store), version unchanged.
    r = await cli(['bind', 'c-signed', '--baseline', 'web-2', ...via()], undefined, dir);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('added a measurement set (baseline web-2) to c-signed: version 1 unchanged');
    expect(r.stderr).toContain('warning: baseline "web-2" has 0 valid approval(s) of 1 required');
    expect(broker.store.snapshot().bindings.get('c-signed')!.allow).toHaveLength(2);
  });

  it('a baseline file is stored first, then named (with --key; a single-use --token cannot make two calls)', async () => {
    await writeFile(join(dir, 'web-9.json'), JSON.stringify(baseline('web-9', { 0: h(0x19), 1: h(0x22), 2: h(0x33), 8: PCR8 })));
    let r = await cli(['bind', 'c-file', '--baseline', 'web-9.json', '--value-stdin', ...via()], VALUE, dir);
    expect([r.status, r.stdout]).toEqual([0, expect.stringContaining('bound c-file version 1')]);
    expect(r.stderr).toContain('warning: baseline "web-9"');
    expect(broker.store.snapshot().baselines.has('web-9')).toBe(true);
    expect(broker.store.snapshot().bindings.get('c-file')!.allow).toEqual([{ pcrs: { 0: h(0x19), 1: h(0x22), 2: h(0x33), 8: PCR8 }, baseline: 'web-9' }]);
    const tok = (await cli(['admin', 'token', '--key', keyFile, '--scope', 'secrets:write'])).stdout.trim();
    r = await cli(['bind', 'c-file2', '--baseline', 'web-9.json', '--value-stdin', '--broker-admin', broker.adminUrl!, '--token', tok], VALUE, dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('two calls');
  });

  it('refusals: an unknown baseline is BASELINE_NOT_FOUND, a malformed tag a usage error, a bad role INPUT_INVALID at the broker too', async () => {
    let r = await cli(['bind', 'c-x', '--baseline', 'nope', '--value-stdin', ...via()], VALUE, dir);
    expect([r.status, r.stderr]).toEqual([2, expect.stringContaining('BASELINE_NOT_FOUND')]);
    r = await cli(['bind', 'c-x', '--baseline', 'nope', ...via()], undefined, dir);
    expect([r.status, r.stderr]).toEqual([2, expect.stringContaining('BASELINE_NOT_FOUND')]);
    r = await cli(['bind', 'c-x', '--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2], '--instance-tag', 'role', '--value-stdin', ...via()], VALUE, dir);
    expect([r.status, r.stderr]).toEqual([2, expect.stringContaining('--instance-tag: expected KEY=VALUE')]);
    r = await cli(['bind', 'c-x', '--baseline', 'web-1', '--iam-role', 'arn:aws:iam::1:role/x', '--value-stdin', ...via()], VALUE, dir);
    expect([r.status, r.stderr]).toEqual([2, expect.stringContaining('is not an IAM role ARN')]);
    expect(broker.store.snapshot().bindings.has('c-x')).toBe(false);
  });

  it('keygate baseline list --broker-admin shows what it shows on the store', async () => {
    const r = await cli(['baseline', 'list', ...via()], undefined, dir);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(/^baselines in the broker at http:\/\/127\.0\.0\.1:\d+ \(1 admin key\(s\) configured, 1 approval\(s\) required\)\n/);
    expect(r.stdout).toMatch(/\nweb-1 {2}approved {2}1\/1 valid approval\(s\)/);
    expect(r.stdout).toMatch(/\nweb-2 {2}NOT APPROVED {2}0\/1 valid approval\(s\)/);
    const json = await cli(['baseline', 'list', '--json', ...via()], undefined, dir);
    expect((JSON.parse(json.stdout) as { baselines: Array<{ name: string }> }).baselines.map((b) => b.name)).toEqual(['web-1', 'web-2', 'web-9']);
    const wrong = (await cli(['admin', 'token', '--key', keyFile, '--scope', 'baselines:approve'])).stdout.trim();
    const denied = await cli(['baseline', 'list', '--broker-admin', broker.adminUrl!, '--token', wrong], undefined, dir);
    expect([denied.status, denied.stderr]).toEqual([2, expect.stringContaining('FORBIDDEN (SCOPE_MISSING)')]);
  });
});
