import { generateKeyPairSync } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
/**
 * Inject bindings (credential substitution, issue 13 item 1): the schema in the house style, the CLI flags,
 * and the promise that `POST /v1/secrets` never releases one (POLICY_DENIED, audited as INJECT_ONLY), with
 * the value in no answer, output or audit record.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseBinding, parseInject, SchemaError } from '../../broker/policy/schema.js';
import { AdminError, bindSecret, pcrSet, rotateSecret } from '../../broker/admin.js';
import { FileStore } from '../../broker/store/file-store.js';
import { cli } from '../support/cli.js';
import { APPROVED, TestEnclave } from '../support/enclave.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { startTestBroker } from '../support/broker.js';
import type { RunningBroker } from '../../broker/broker.js';

const VALUE = 'sk-inject-binding-secret-0123456789';
const RULE = { upstream: 'https://api.example.com', header: 'authorization', template: 'Bearer {value}', routes: ['POST /v1/chat/completions', 'GET /v1/models*'], maxBodyBytes: 1024, budget: { requests: 600, windowSeconds: 60 } };

function schemaError(value: unknown): SchemaError {
  try {
    parseInject(value, 'inject');
  } catch (err) {
    expect(err).toBeInstanceOf(SchemaError);
    return err as SchemaError;
  }
  throw new Error('expected a SchemaError');
}

describe('inject schema', () => {
  it('accepts a well-formed rule and normalises nothing it should not', () => {
    expect(parseInject({ ...RULE, allowStatus: [200, 201] })).toEqual({ ...RULE, allowStatus: [200, 201] });
  });

  it.each([
    ['an http upstream', { ...RULE, upstream: 'http://api.example.com' }, 'inject.upstream'],
    ['an upstream with a path', { ...RULE, upstream: 'https://api.example.com/v1' }, 'inject.upstream'],
    ['an upstream with credentials', { ...RULE, upstream: 'https://u:p@api.example.com' }, 'inject.upstream'],
    ['a template without {value}', { ...RULE, template: 'Bearer x' }, 'inject.template'],
    ['a template with {value} twice', { ...RULE, template: '{value}{value}' }, 'inject.template'],
    ['a template with CR/LF', { ...RULE, template: 'Bearer {value}\r\nX-Evil: 1' }, 'inject.template'],
    ['a reserved header', { ...RULE, header: 'host' }, 'inject.header'],
    ['an upper-case header', { ...RULE, header: 'Authorization' }, 'inject.header'],
    ['a route without a method', { ...RULE, routes: ['/v1/x'] }, 'inject.routes[0]'],
    ['a route with a dot segment', { ...RULE, routes: ['GET /v1/../admin'] }, 'inject.routes[0]'],
    ['a route with an encoded slash', { ...RULE, routes: ['GET /v1%2fadmin'] }, 'inject.routes[0]'],
    ['a route with a dot segment carrying path parameters', { ...RULE, routes: ['GET /v1/..;x=1/admin'] }, 'inject.routes[0]'],
    ['a route with a double-encoded dot segment', { ...RULE, routes: ['GET /v1/%252e%252e/admin'] }, 'inject.routes[0]'],
    ['no routes', { ...RULE, routes: [] }, 'inject.routes'],
    ['a zero budget', { ...RULE, budget: { requests: 0, windowSeconds: 60 } }, 'inject.budget.requests'],
    ['a status out of range', { ...RULE, allowStatus: [99] }, 'inject.allowStatus[0]'],
    ['an unknown field', { ...RULE, extra: 1 }, 'inject.extra'],
  ])('refuses %s with SCHEMA_INVALID naming the field', (_what, value, path) => {
    const err = schemaError(value);
    expect(err.code).toBe('SCHEMA_INVALID');
    expect(err.path).toBe(path);
  });
});

describe('inject in a binding', () => {
  it('cannot be combined with mode kms-recipient (the broker must hold the value to add it)', () => {
    const binding = {
      secret: 's', version: 1, provider: 'aws-kms', kmsKeyId: 'alias/k', mode: 'kms-recipient', ciphertext: 'AAAA', text: true, allow: [{ pcrs: { ...APPROVED } }],
      allowDebug: false, ttlSeconds: 60, revoked: false, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z', inject: RULE,
    };
    const err = (() => {
      try {
        parseBinding(binding);
      } catch (e) {
        return e as SchemaError;
      }
      throw new Error('expected a SchemaError');
    })();
    expect([err.code, err.path]).toEqual(['SCHEMA_INVALID', 'binding.inject']);
    const { mode: _mode, ...jwe } = binding;
    expect(parseBinding(jwe).inject).toEqual(RULE);
  });

  it('cannot be combined with human approval (a gateway token is not gated by approvers)', async () => {
    const { publicKey } = generateKeyPairSync('ed25519');
    const jwk = publicKey.export({ format: 'jwk' }) as { kty: 'OKP'; crv: 'Ed25519'; x: string };
    const approval = { required: 1, approvers: [{ kid: await calculateJwkThumbprint(jwk, 'sha256'), jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x } }], windowSeconds: 900 };
    const binding = {
      secret: 's', version: 1, provider: 'local', ciphertext: 'AAAA', text: true, allow: [{ pcrs: { ...APPROVED } }],
      allowDebug: false, ttlSeconds: 60, revoked: false, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z', inject: RULE, approval,
    };
    let err: SchemaError | undefined;
    try {
      parseBinding(binding);
    } catch (e) {
      err = e as SchemaError;
    }
    expect([err?.code, err?.path]).toEqual(['SCHEMA_INVALID', 'binding.inject']);
    const { inject: _inject, ...approvalOnly } = binding;
    expect(parseBinding(approvalOnly).approval).toEqual(approval);
  });
});

let dir: string;
let pki: TestPki;
let broker: RunningBroker;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-inject-'));
  pki = await createTestPki(Date.now());
  writeFileSync(join(dir, 'keygate.json'), JSON.stringify({ store: 'store', stateDir: 'state' }));
});

afterAll(async () => {
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

const pcrs = ['--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2]];

describe('keygate bind --inject', () => {
  it('stores the inject section the flags describe; the value is in no output', async () => {
    const r = await cli(
      ['bind', 'openai', '--inject', '--upstream', 'https://api.example.com', '--header', 'Authorization: Bearer {value}', '--allow-route', 'POST /v1/chat/completions', '--allow-route', 'GET /v1/models',
        '--budget', '600/min', '--max-body', '4096', '--allow-status', '200,201', ...pcrs, '--value-stdin', '--config', join(dir, 'keygate.json')],
      VALUE,
      dir,
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('inject into https://api.example.com');
    expect(r.stdout + r.stderr).not.toContain(VALUE);
    expect((await cli(['list', '--config', join(dir, 'keygate.json')], undefined, dir)).stdout).toContain('inject https://api.example.com');
    const stored = JSON.parse(readFileSync(join(dir, 'store', 'bindings', 'openai.json'), 'utf8')) as { inject: unknown };
    expect(stored.inject).toEqual({ upstream: 'https://api.example.com', header: 'authorization', template: 'Bearer {value}', routes: ['POST /v1/chat/completions', 'GET /v1/models'], maxBodyBytes: 4096, budget: { requests: 600, windowSeconds: 60 }, allowStatus: [200, 201] });
  });

  it.each([
    ['inject flags without --inject', ['--upstream', 'https://api.example.com'], /add --inject/],
    ['--inject without a route', ['--inject', '--upstream', 'https://api.example.com', '--header', 'Authorization: Bearer {value}', '--budget', '1/s'], /needs --allow-route/],
    ['a bad budget', ['--inject', '--upstream', 'https://api.example.com', '--header', 'Authorization: Bearer {value}', '--allow-route', 'GET /x', '--budget', 'lots'], /--budget/],
    ['a bad upstream', ['--inject', '--upstream', 'http://api.example.com', '--header', 'Authorization: Bearer {value}', '--allow-route', 'GET /x', '--budget', '1/s'], /inject\.upstream/],
  ])('refuses %s (usage error, nothing stored)', async (_what, flags, message) => {
    const r = await cli(['bind', 'other', ...flags, ...pcrs, '--value-stdin', '--config', join(dir, 'keygate.json')], VALUE, dir);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(readdirSync(join(dir, 'store', 'bindings'))).not.toContain('other.json');
  });

  it('a re-bind that forgets --inject is refused (it would make the credential releasable); rotation keeps inject', async () => {
    const store = await FileStore.open(join(dir, 'store'));
    const { LocalKeyProvider } = await import('../../broker/kms/local.js');
    const local = await LocalKeyProvider.open(join(dir, 'state', 'local-provider.key'));
    const err = await bindSecret(store, local, { secret: 'openai', value: new TextEncoder().encode('x'), allow: [pcrSet(APPROVED)], provider: 'local' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AdminError);
    expect((err as AdminError).code).toBe('ADMIN_REFUSED');
    const rotated = await rotateSecret(store, new Map([['local', local]]), 'openai', new TextEncoder().encode(VALUE));
    expect(rotated.inject?.upstream).toBe('https://api.example.com');
    store.close();
  });
});

describe('POST /v1/secrets on an inject binding', () => {
  it('answers POLICY_DENIED, audited as INJECT_ONLY; the value is in no answer or audit record', async () => {
    broker = await startTestBroker(dir, [pki.root.pem]);
    const enclave = new TestEnclave(pki, broker.url);
    const res = await enclave.request(['openai']);
    expect(res.status).toBe(403);
    expect(res.body.error?.code).toBe('POLICY_DENIED');
    expect(JSON.stringify(res.body)).not.toContain(VALUE);
    const audit = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8');
    const records = audit.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { secret?: string; code?: string; decision?: string });
    expect(records.filter((r) => r.secret === 'openai').map((r) => [r.decision, r.code])).toEqual([['deny', 'INJECT_ONLY']]);
    expect(audit).not.toContain(VALUE);
    expect(audit).not.toContain(Buffer.from(VALUE).toString('base64'));
    const metrics = await (await fetch(`${broker.url}/metrics`)).text();
    expect(metrics).not.toContain(VALUE);
  });
});
