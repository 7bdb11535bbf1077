/**
 * `keygate audit verify` exits 0 only for a log whose every record is covered
 * by a verified seal signature; everything else exits 1 with its own message.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog, lineHash } from '../../broker/audit/log.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import { loadOrCreateSigningKey, type SigningKey } from '../../broker/signing-key.js';
import { cli, keygateServer } from '../support/cli.js';

let dir: string;
let key: SigningKey;
let keyFile: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-audit-cli-'));
  keyFile = join(dir, 'broker-signing-key.jwk');
  key = await loadOrCreateSigningKey(keyFile);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const rec = (i: number): DecisionRecord => ({
  time: new Date(0).toISOString(), decision: 'release', code: 'RELEASED', secret: 'db', version: 1, moduleId: 'i-0', pcrs: null, docSha256: null, nonce: `n${i}`, client: '127.0.0.1', latencyMs: 1,
});

/** A sealed log of `n` decisions in `file` (a fresh directory each time). */
async function sealedLog(name: string, n = 3, options: { maxFileBytes?: number } = {}): Promise<string> {
  const sub = join(dir, name);
  mkdirSync(sub);
  const file = join(sub, 'audit.jsonl');
  const log = await AuditLog.open(file, { key: key.privateKey, kid: key.kid }, options);
  for (let i = 0; i < n; i++) await log.append(rec(i));
  await log.close();
  return file;
}

/** In process, in `dir` so no default state directory supplies a key. */
const verify = (...args: string[]): ReturnType<typeof cli> => cli(['audit', 'verify', ...args], undefined, dir);

describe('keygate audit verify', () => {
  it('exits 0 for an intact, fully sealed log with a key', async () => {
    const file = await sealedLog('ok');
    const r = await verify(file, '--key', keyFile);
    expect(r.stdout).toMatch(/audit log intact: 3 decisions, 3 seals \(signatures verified\), 0 refusal summaries, in 1 file\(s\)/);
    expect(r.status).toBe(0);
  });

  it('exits 1 without a key, and 0 with an explicit --no-signatures that the output names', async () => {
    const file = await sealedLog('nokey');
    const r = await verify(file);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/NOT VERIFIED: no broker key: seal signatures not checked/);
    const waived = await verify(file, '--no-signatures');
    expect(waived.status).toBe(0);
    expect(waived.stdout).toMatch(/SIGNATURES NOT CHECKED \(--no-signatures\)/);
    expect((await verify(file, '--no-signatures', '--key', keyFile)).status).toBe(2);
  });

  it('exits 1 for a forged log whose seals do not verify under the broker key', async () => {
    const file = await sealedLog('forged');
    const other = await loadOrCreateSigningKey(join(dir, 'other-key.jwk'));
    const forged = join(dir, 'forged', 'forged.jsonl');
    const log = await AuditLog.open(forged, { key: other.privateKey, kid: key.kid });
    await log.append(rec(1));
    await log.close();
    expect((await verify(file, '--key', keyFile)).status).toBe(0);
    const r = await verify(forged, '--key', keyFile);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/TAMPERED at line 2: seal signature does not verify/);
  });

  it('exits 1 with their count when records follow the last seal', async () => {
    const file = await sealedLog('unsealed');
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    let prev = lineHash(lines.at(-1)!);
    let seq = lines.length;
    for (const i of [7, 8]) {
      const line = JSON.stringify({ seq: ++seq, prevHash: prev, type: 'decision', ...rec(i) });
      appendFileSync(file, `${line}\n`);
      prev = lineHash(line);
    }
    const r = await verify(file, '--key', keyFile);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/NOT FULLY SEALED: 2 unsealed record\(s\)/);
    expect(r.stdout).not.toMatch(/intact/);
  });

  it('reports a torn final line as a torn tail, not as an edit', async () => {
    const file = await sealedLog('torn');
    appendFileSync(file, '{"seq":7,"prevHash":"ab');
    const r = await verify(file, '--key', keyFile);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/TORN TAIL at line 7: torn tail: the last line \(23 bytes, no newline\)/);
    expect(r.stdout).not.toMatch(/TAMPERED/);
  });

  it('does not call an empty file intact', async () => {
    const file = join(dir, 'empty.jsonl');
    writeFileSync(file, '');
    const r = await verify(file, '--key', keyFile);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/NOT VERIFIED: the audit log is empty/);
  });

  it('checks a rotated log as one chain: a directory, or its files in order; a missing file is a drop', async () => {
    const file = await sealedLog('rotated', 40, { maxFileBytes: 4096 });
    const sub = join(dir, 'rotated');
    const names = readdirSync(sub).sort();
    expect(names.length).toBeGreaterThan(3);
    expect(names.at(-1)).toBe('audit.jsonl');
    expect(names[0]).toBe('audit.000001.jsonl');
    const all = await verify(sub, '--key', keyFile);
    expect(all.stdout).toMatch(/audit log intact: 40 decisions, 40 seals \(signatures verified\), 0 refusal summaries, in \d+ file\(s\)/);
    expect(all.status).toBe(0);
    expect((await verify(...names.map((n) => join(sub, n)), '--key', keyFile)).status).toBe(0);
    // The live file alone does not start the chain: its first record follows a dropped one.
    const alone = await verify(file, '--key', keyFile);
    expect(alone.status).toBe(1);
    expect(alone.stdout).toMatch(/TAMPERED at line 1: sequence jumps .* dropped/);
    expect(alone.stdout).toMatch(/earlier rotated files exist beside it, e\.g\. audit\.000001\.jsonl/);
    // A segment taken out of the middle breaks the chain.
    renameSync(join(sub, 'audit.000002.jsonl'), join(dir, 'moved.jsonl'));
    const gap = await verify(sub, '--key', keyFile);
    expect(gap.status).toBe(1);
    expect(gap.stdout).toMatch(/TAMPERED at line 1 of .*audit\.000003\.jsonl: sequence jumps/);
  });
});

describe('keygate broker', () => {
  it('logs the audit file path at start', async () => {
    const state = join(dir, 'broker-state');
    const server = await keygateServer(['broker', '--state', state, '--store', join(dir, 'broker-store'), '--listen', '127.0.0.1:0', '--workers', '1'], /listening on (http:\/\/\S+)/);
    await new Promise<void>((resolve, reject) => {
      const end = Date.now() + 20_000;
      const poll = (): void => {
        if (server.output().includes('"audit log"')) resolve();
        else if (Date.now() > end) reject(new Error(server.output()));
        else setTimeout(poll, 20);
      };
      poll();
    });
    // One round trip: the process is back in its event loop, so its SIGTERM handler is installed
    // (cli/commands/broker.ts installs it right after printing "listening").
    expect((await fetch(`${server.match[1]!}/healthz`)).status).toBe(200);
    const code = await server.stop();
    expect(code, server.output()).toBe(0);
    const line = server.output().split('\n').find((l) => l.includes('"audit log"'))!;
    expect(JSON.parse(line)).toMatchObject({ level: 'info', message: 'audit log', file: join(state, 'audit.jsonl') });
  });
});
