/**
 * Admin API review findings (reproduced first): a used token replayed after a
 * broker restart, an invalid URL name written to the audit log verbatim.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomUUID, type KeyObject } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Broker } from '../../broker/broker.js';
import { mintAdminToken, type AdminScope } from '../../broker/admin-api/token.js';
import type { Logger } from '../../broker/log.js';
import { openAdminBroker, writeAdminKeys } from '../support/admin-broker.js';

const PCR = (c: string): string => c.repeat(96);
let dir: string;
let broker: Broker;
let apiKey: KeyObject;
let now: number;
let logLines: string[];

function open(): Promise<Broker> {
  const log: Logger = (level, message, fields) => void logLines.push(JSON.stringify({ level, message, fields }));
  return openAdminBroker(dir, { log, clock: () => now });
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'keygate-attack-'));
  ({ apiKey } = await writeAdminKeys(dir));
  logLines = [];
  now = Date.now();
  broker = await open();
});
afterEach(async () => {
  await broker.close();
  await rm(dir, { recursive: true, force: true });
});

const token = (scopes: AdminScope[], jti = randomUUID()) => mintAdminToken({ key: apiKey, scopes, audience: 'keygate-admin', ttlSeconds: 300, now, jti });
async function call(b: Broker, method: string, path: string, tok: string | undefined, body?: unknown, rawBody?: string) {
  const res = await b.adminApp!.request(path, {
    method,
    headers: { ...(tok ? { authorization: `Bearer ${tok}` } : {}), ...(body !== undefined || rawBody !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : rawBody !== undefined ? { body: rawBody } : {}),
  });
  return { status: res.status, json: (await res.json()) as { error?: { code?: string; reason?: string } } & Record<string, unknown> };
}
const bindBody = (text = 'v-attack-1234') => ({ value: { text }, allow: [{ pcrs: { 0: PCR('a'), 1: PCR('b'), 2: PCR('c') } }] });
describe('jti single use survives a broker restart (memory nonce registry: the jti file)', () => {
  it('a token used before a restart is refused by the restarted broker within its lifetime (TOKEN_REPLAYED)', async () => {
    const tok = await token(['secrets:write']);
    expect((await call(broker, 'PUT', '/v1/admin/secrets/a', tok, bindBody())).status).toBe(200);
    expect((await call(broker, 'DELETE', '/v1/admin/secrets/a', tok)).json.error?.reason).toBe('TOKEN_REPLAYED');
    await broker.close();
    broker = await open();
    now += 10_000; // well inside the 300 s lifetime
    const replay = await call(broker, 'DELETE', '/v1/admin/secrets/a', tok);
    expect(replay.json.error?.reason).toBe('TOKEN_REPLAYED');
    // A fresh token still works after the restart.
    expect((await call(broker, 'DELETE', '/v1/admin/secrets/a', await token(['secrets:write']))).status).toBe(200);
  });
});

describe('an invalid :name from the URL never reaches the audit log', () => {
  it('PUT /v1/admin/secrets/<value-looking text> is BAD_REQUEST and the text is in no audit record', async () => {
    const leaked = 'AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG';
    const r = await call(broker, 'PUT', `/v1/admin/secrets/${encodeURIComponent(leaked)}`, await token(['secrets:write']), bindBody());
    expect(r.json.error?.code).toBe('BAD_REQUEST');
    await broker.audit.close();
    const audit = await readFile(join(dir, 'state', 'audit.jsonl'), 'utf8');
    expect(audit).not.toContain('wJalrXUtnFEMI');
  });
});


describe('values never travel in URLs', () => {
  it('a query string on an admin route is BAD_REQUEST before anything is done or recorded', async () => {
    const tok = await token(['secrets:write']);
    expect((await call(broker, 'PUT', '/v1/admin/secrets/q', await token(['secrets:write']), bindBody())).status).toBe(200);
    const r = await call(broker, 'POST', '/v1/admin/secrets/q/rotate?value=topsecret-in-url', tok, { value: { text: 'x' } });
    expect(r.json.error?.code).toBe('BAD_REQUEST');
    await broker.audit.close();
    const audit = await readFile(join(dir, 'state', 'audit.jsonl'), 'utf8');
    expect(audit).not.toContain('topsecret-in-url');
    expect(audit.split('\n').filter((l) => l.includes('"action":"rotate"'))).toEqual([]);
  });
});
