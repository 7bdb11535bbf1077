/**
 * Junk cannot fill the audit disk: a request whose document does not verify
 * (or that is refused before verification) costs at most one bounded record,
 * sustained junk from one client is counted into summaries, and the log
 * rotates by size with the chain continuing across files.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestBroker, NO_RATE_LIMITS } from '../support/broker.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { AuditLog } from '../../broker/audit/log.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import { DEFAULT_REFUSAL_SETTINGS } from '../../broker/audit/refusals.js';
import { verifyAuditLogs } from '../../broker/audit/verify-log.js';
import { auditFilesIn } from '../../broker/audit/segments.js';

let dir: string;
let pki: TestPki;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-junk-'));
  pki = await createTestPki(Date.now());
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const NAMES = Array.from({ length: 32 }, (_, i) => `name-${i}`);
const junkBody = (): string => JSON.stringify({ attestation: randomBytes(300).toString('base64'), names: NAMES });

interface Line { type: string; code?: string; secret?: string | null; client?: string; refused?: Array<{ client: string; code: string; count: number }>; otherCount?: number }

async function sendJunk(url: string, n: number, concurrency = 8): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++;
        const res = await fetch(`${url}/v1/secrets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: junkBody() });
        await res.arrayBuffer();
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      }
    }),
  );
  return statuses;
}

async function auditLines(stateDir: string): Promise<{ lines: Line[]; bytes: number; check: ReturnType<typeof verifyAuditLogs> }> {
  const files = await auditFilesIn(stateDir);
  const texts = files.map((f) => ({ name: f, text: readFileSync(f, 'utf8') }));
  return {
    lines: texts.flatMap((t) => t.text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line)),
    bytes: texts.reduce((s, t) => s + Buffer.byteLength(t.text), 0),
    check: verifyAuditLogs(texts),
  };
}

describe('junk requests and the audit log', () => {
  it.each([
    ['no per-client limit', NO_RATE_LIMITS],
    ['per-client limit', { ...NO_RATE_LIMITS, perClientPerSecond: 1 }],
  ])('%s: N junk requests with 32 names each cost a bounded number of records, the rest counted in a summary', async (name, rateLimits) => {
    const N = 300;
    const b = await startTestBroker(join(dir, name), [pki.root.pem], { rateLimits });
    const started = Date.now();
    let statuses: Map<number, number>;
    try {
      statuses = await sendJunk(b.url, N);
    } finally {
      await b.close(); // writes the pending summary
    }
    const seconds = (Date.now() - started) / 1000;
    expect([...statuses.values()].reduce((a, c) => a + c, 0)).toBe(N);
    expect(statuses.get(200)).toBeUndefined();
    const { lines, check } = await auditLines(join(dir, name, 'state'));
    expect(check.problem?.kind).toBe('unsigned'); // chain intact, fully sealed (no key given here)
    const decisions = lines.filter((l) => l.type === 'decision');
    const summaries = lines.filter((l) => l.type === 'summary');
    // Never one record per name: individual records only within the client's small budget.
    expect(decisions.every((d) => d.secret === null)).toBe(true);
    expect(decisions.length).toBeLessThanOrEqual(DEFAULT_REFUSAL_SETTINGS.perClientBurst + Math.ceil(seconds * DEFAULT_REFUSAL_SETTINGS.perClientPerSecond) + 1);
    expect(summaries.length).toBe(1);
    const counted = summaries.flatMap((s) => s.refused!).reduce((a, e) => a + e.count, 0);
    expect(decisions.length + counted).toBe(N);
    const codes = new Set(summaries.flatMap((s) => s.refused!.map((e) => e.code)));
    if (rateLimits.perClientPerSecond) expect(codes).toContain('RATE_LIMITED');
    expect(summaries[0]!.refused!.every((e) => e.client === '127.0.0.1')).toBe(true);
  });

  it('rotates the file by size; the chain continues across files, across a reopen and across a crash between rename and the new file', async () => {
    const sub = join(dir, 'rotate');
    const file = join(sub, 'audit.jsonl');
    const { generateKeyPairSync } = await import('node:crypto');
    const key = generateKeyPairSync('ed25519');
    const signer = { key: key.privateKey, kid: 'k' };
    const rec = (i: number): DecisionRecord => ({ time: new Date(0).toISOString(), decision: 'deny', code: 'PCR_MISMATCH', secret: `s${i}`, version: null, moduleId: null, pcrs: null, docSha256: null, nonce: null, client: '127.0.0.1', latencyMs: 1 });
    let log = await AuditLog.open(file, signer, { maxFileBytes: 4096 });
    for (let i = 0; i < 30; i++) await log.append(rec(i));
    await log.close();
    log = await AuditLog.open(file, signer, { maxFileBytes: 4096 });
    for (let i = 30; i < 40; i++) await log.append(rec(i));
    await log.close();
    // A crash right after the rename: no live file; the chain continues from the newest segment.
    const segments = readdirSync(sub).filter((n) => n !== 'audit.jsonl').sort();
    const n = segments.length + 1;
    renameSync(file, join(sub, `audit.${String(n).padStart(6, '0')}.jsonl`));
    log = await AuditLog.open(file, signer, { maxFileBytes: 4096 });
    for (let i = 40; i < 45; i++) await log.append(rec(i));
    await log.close();

    const files = await auditFilesIn(sub);
    expect(files.length).toBeGreaterThan(4);
    for (const f of files) expect(readFileSync(f).length).toBeLessThan(4096 + 1024);
    const check = verifyAuditLogs(files.map((f) => ({ name: f, text: readFileSync(f, 'utf8') })), key.publicKey);
    expect(check.problem).toBeUndefined();
    expect(check).toMatchObject({ ok: true, decisions: 45, unsealed: 0 });
  });
});
