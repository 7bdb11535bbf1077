/**
 * `keygate audit verify DIR` on the state directory of `keygate broker --workers N`: every worker's
 * chain (audit.w<i>.jsonl with its segments) is checked on its own; intact only if all are.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../../broker/audit/log.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import { loadOrCreateSigningKey, type SigningKey } from '../../broker/signing-key.js';
import { cli } from '../support/cli.js';

let dir: string;
let key: SigningKey;
let keyFile: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-audit-workers-'));
  keyFile = join(dir, 'broker-signing-key.jwk');
  key = await loadOrCreateSigningKey(keyFile);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rec = (i: number): DecisionRecord => ({
  time: new Date(0).toISOString(), decision: 'release', code: 'RELEASED', secret: 'db', version: 1, moduleId: 'i-0', pcrs: null, docSha256: null, nonce: `n${i}`, client: '127.0.0.1', latencyMs: 1,
});

/** `state/` with one sealed chain per worker (`audit.w1.jsonl`, ...), the second rotated into segments. */
async function workerState(name: string): Promise<string> {
  const state = join(dir, name);
  mkdirSync(state);
  for (const [i, options] of [[1, {}], [2, { maxFileBytes: 600 }]] as const) {
    const log = await AuditLog.open(join(state, `audit.w${i}.jsonl`), { key: key.privateKey, kid: key.kid }, options);
    for (let k = 0; k < 4; k++) await log.append(rec(k));
    await log.close();
  }
  return state;
}

describe('keygate audit verify DIR with one chain per worker', () => {
  it('checks each chain on its own and exits 0 when all are intact', async () => {
    const state = await workerState('ok');
    const r = await cli(['audit', 'verify', state, '--key', keyFile], undefined, dir);
    expect(r.stdout).toMatch(/^audit\.w1\.jsonl: intact: 4 decisions/m);
    expect(r.stdout).toMatch(/^audit\.w2\.jsonl: intact: 4 decisions, \d+ seals, 0 refusal summaries, in [2-9] file\(s\)/m);
    expect(r.stdout).toContain('audit logs intact: 2 chains (signatures verified)');
    expect(r.status).toBe(0);
    const json = await cli(['audit', 'verify', state, '--key', keyFile, '--json'], undefined, dir);
    expect(JSON.parse(json.stdout)).toMatchObject({ ok: true, sealsVerified: true, logs: [{ log: 'audit.w1.jsonl', ok: true, decisions: 4 }, { log: 'audit.w2.jsonl', ok: true, decisions: 4 }] });
  });

  it('an edited record in one worker chain fails the set (exit 1), naming that chain', async () => {
    const state = await workerState('edited');
    const file = join(state, 'audit.w1.jsonl');
    writeFileSync(file, readFileSync(file, 'utf8').replace('"nonce":"n2"', '"nonce":"nX"'));
    const r = await cli(['audit', 'verify', state, '--key', keyFile], undefined, dir);
    expect(r.stdout).toMatch(/^audit\.w1\.jsonl: TAMPERED at line \d+/m);
    expect(r.stdout).toMatch(/^audit\.w2\.jsonl: intact/m);
    expect(r.stdout).toContain('audit logs NOT all intact: 1 of 2 chains');
    expect(r.status).toBe(1);
  });
});
