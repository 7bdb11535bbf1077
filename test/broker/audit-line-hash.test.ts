/**
 * The audit chain's link is the SHA-256 of the previous line's UTF-8 bytes, whatever digest call the log makes
 * (broker/audit/chain.ts uses node's one-shot crypto.hash where it exists): checked here against an independent
 * reference (a createHash stream) over lines with non-ASCII text, and the file still passes `keygate audit verify`.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { AuditLog, GENESIS_HASH, lineHash } from '../../broker/audit/log.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import { loadOrCreateSigningKey, type SigningKey } from '../../broker/signing-key.js';
import { cli } from '../support/cli.js';

let dir: string;
let key: SigningKey;
let keyFile: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-audit-hash-'));
  keyFile = join(dir, 'broker-signing-key.jwk');
  key = await loadOrCreateSigningKey(keyFile);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const reference = (line: string): string => createHash('sha256').update(Buffer.from(line, 'utf8')).digest('hex');

describe('audit line hash', () => {
  it('is the SHA-256 of the line as UTF-8 for any text (ASCII, non-ASCII, astral, lone surrogates)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (line) => {
        expect(lineHash(line)).toBe(reference(line));
      }),
      { numRuns: 300 },
    );
    expect(lineHash('')).toBe(reference(''));
  });

  it('links every line of a written log to the one before it, and the log verifies', async () => {
    const file = join(dir, 'audit.jsonl');
    const log = await AuditLog.open(file, { key: key.privateKey, kid: key.kid });
    const rec = (i: number): DecisionRecord => ({
      time: new Date(0).toISOString(), decision: 'deny', code: 'POLICY_DENIED', secret: `naïve-✓-秘密-${i}`, version: null, moduleId: 'i-0', pcrs: null, docSha256: null, nonce: null, client: `client 🙂 ${i}`, latencyMs: 1,
    });
    await Promise.all([0, 1, 2].map((i) => log.append(rec(i))));
    await log.append(rec(3));
    await log.close();
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    expect(lines.length).toBeGreaterThanOrEqual(6); // 4 records, at least 2 seals
    let prev = GENESIS_HASH;
    for (const line of lines) {
      expect((JSON.parse(line) as { prevHash: string }).prevHash).toBe(prev);
      prev = reference(line);
    }
    const r = await cli(['audit', 'verify', file, '--key', keyFile], undefined, dir);
    expect(r.stdout).toMatch(/audit log intact: 4 decisions/);
    expect(r.status).toBe(0);
  });
});
