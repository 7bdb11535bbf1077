/**
 * Regression tests for a second adversarial review of the S3 audit archive (against moto_server's S3):
 * - F1: the retention check judged every segment against the retention configured NOW and a retain-until
 *   computed once at the start of a run, so a long run, or a raised retentionDays, left legitimate segments
 *   that export refused (ARCHIVE_TAMPERED) and verify reported, forever (the locked object cannot be removed);
 * - F2: export trusted the segment with the highest last seq, so anyone with s3:PutObject could plant a
 *   compliance-locked `1-999999999999` object and stop the chain from ever being archived again;
 *   a squatted next key (garbage, or the right bytes without a lock) wedged it too;
 * - F5: `audit export --json` without any key source printed text and exited 2; the other failure paths
 *   of export / verify-archive in --json mode answer one JSON object and exit 1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { ListObjectVersionsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { exportAuditChains } from '../../broker/audit/archive/export.js';
import { verifyAuditArchive } from '../../broker/audit/archive/verify.js';
import { initArchiveBucket } from '../../broker/audit/archive/open-archive.js';
import type { AuditArchiveSettings } from '../../broker/audit/settings.js';
import { auditArchiveCommand, type ArchiveContextSource } from '../../cli/commands/audit-archive.js';
import { cli, type Run } from '../support/cli.js';
import { MemoryChainReader, decisions, testAuditKey, type TestAuditKey } from '../support/memory-chains.js';
import { awsOf, startMoto, uniqueName, type Moto } from '../support/moto.js';

let moto: Moto;
let s3: S3Client;
let key: TestAuditKey;
let dir: string;
let savedEnv: NodeJS.ProcessEnv;
beforeAll(async () => {
  moto = await startMoto();
  s3 = new S3Client({ ...awsOf(moto), forcePathStyle: true });
  key = testAuditKey();
  dir = mkdtempSync(join(tmpdir(), 'keygate-archive-r2-'));
  savedEnv = { ...process.env };
}, 120_000);
afterAll(async () => {
  process.env = savedEnv;
  s3?.destroy();
  await moto?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const DAY = 86_400_000;
const settingsFor = (extra: Partial<AuditArchiveSettings> = {}): AuditArchiveSettings => ({
  bucket: uniqueName('kg-r2').toLowerCase(),
  prefix: 'audit/',
  retentionDays: 1,
  ...awsOf(moto),
  requestTimeoutMs: 30_000,
  ...extra,
});
async function lockedBucket(extra: Partial<AuditArchiveSettings> = {}): Promise<AuditArchiveSettings> {
  const settings = settingsFor(extra);
  await initArchiveBucket(settings);
  return settings;
}
const signed = (): { publicKey: TestAuditKey['publicKey'] } => ({ publicKey: key.publicKey });
async function keysIn(bucket: string): Promise<string[]> {
  const out = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket }));
  return (out.Versions ?? []).map((v) => v.Key!).sort();
}
async function plant(bucket: string, k: string, body: string, lock = true): Promise<void> {
  await s3.send(
    new PutObjectCommand({
      Bucket: bucket,
      Key: k,
      Body: body,
      ChecksumAlgorithm: 'SHA256',
      ...(lock ? { ObjectLockMode: 'COMPLIANCE' as const, ObjectLockRetainUntilDate: new Date(Date.now() + 3 * DAY) } : {}),
    }),
  );
}

describe('F1: each segment is judged against the retention in force when it was written', () => {
  it('an export run that took 20 minutes (its clock 20 minutes behind the put) does not wedge the next export', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('replica-a', decisions(3));
    const started = Date.now() - 20 * 60_000;
    expect((await exportAuditChains(reader, settings, { ...signed(), now: () => started })).ok).toBe(true);
    reader.append('replica-a', decisions(2));
    const second = await exportAuditChains(reader, settings, signed());
    expect(second.chains[0]?.error).toBeUndefined();
    expect(second.ok).toBe(true);
    expect(second.chains[0]!.archivedSeq).toBe(7);
  });

  it('retain-until is computed just before each put, not once per run', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('a', decisions(2));
    reader.append('a', decisions(2));
    // A clock that moves one hour per call: the second segment's put is later than the first's.
    let t = Date.now() - 10 * 3_600_000;
    const r = await exportAuditChains(reader, settings, { ...signed(), limits: { maxLines: 3 }, now: () => (t += 3_600_000) });
    expect(r.chains[0]!.segments).toHaveLength(2);
    const v = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(v.problems).toEqual([]);
  });

  it('a segment written by that long run verifies', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('replica-a', decisions(3));
    await exportAuditChains(reader, settings, { ...signed(), now: () => Date.now() - 20 * 60_000 });
    const v = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(v.problems).toEqual([]);
  });

  it('raising audit.archive.retentionDays refuses no chain, and the archive still verifies', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('replica-a', decisions(3));
    expect((await exportAuditChains(reader, settings, signed())).ok).toBe(true);
    reader.append('replica-a', decisions(2));
    const raised = { ...settings, retentionDays: 30 };
    const next = await exportAuditChains(reader, raised, signed());
    expect(next.chains[0]?.error).toBeUndefined();
    expect(next.chains[0]!.archivedSeq).toBe(7);
    expect((await verifyAuditArchive(raised, key.publicKey, { reader })).problems).toEqual([]);
  });

  it('an expired retention is reported as expired, not as short (expired is checked first)', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('a', decisions(2));
    await exportAuditChains(reader, settings, { ...signed(), now: () => Date.now() - 20 * 60_000 });
    const later = await verifyAuditArchive({ ...settings, retentionDays: 400 }, key.publicKey, { reader, now: () => Date.now() + 2 * DAY });
    expect(later.problems).toEqual([]);
    expect(later.retentionExpired).toBe(1);
  });

  it('a short retention on a segment that links is a warning in export, which goes on after it; verify reports it', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('a', decisions(2));
    // The genuine records, compliance-locked for one hour only (below the 1-day floor), under the segment key.
    const text = `${reader.chains.get('a')!.lines.join('\n')}\n`;
    const k = 'audit/a/000000000001-000000000003.jsonl';
    await s3.send(new PutObjectCommand({ Bucket: settings.bucket, Key: k, Body: text, ChecksumAlgorithm: 'SHA256', ObjectLockMode: 'COMPLIANCE', ObjectLockRetainUntilDate: new Date(Date.now() + 3_600_000) }));
    reader.append('a', decisions(1));
    const r = await exportAuditChains(reader, settings, signed());
    expect(r.chains[0]!.error).toBeUndefined();
    expect(r.chains[0]!.segments.map((s) => [s.firstSeq, s.lastSeq])).toEqual([[4, 5]]);
    expect(r.chains[0]!.warnings.map((w) => [w.kind, w.key])).toEqual([['short-retention', k]]);
    const v = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(v.problems.map((p) => [p.kind, p.key])).toEqual([['short-retention', k]]);
    expect(v.chains[0]!.verifiedSeq).toBe(5);
  });
});

describe('F2: export finds the archived head by walking the chain from genesis', () => {
  it('a planted compliance-locked 1-999999999999 object does not stop the chain; verify reports it and verifies the chain', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('replica-a', decisions(3));
    expect((await exportAuditChains(reader, settings, signed())).ok).toBe(true);
    const planted = 'audit/replica-a/000000000001-999999999999.jsonl';
    await plant(settings.bucket, planted, '{"seq":999999999999}\n');
    reader.append('replica-a', decisions(2));
    const next = await exportAuditChains(reader, settings, signed());
    expect(next.chains[0]?.error).toBeUndefined();
    expect(next.ok).toBe(true);
    expect(next.chains[0]!.archivedSeq).toBe(7);
    expect(next.chains[0]!.warnings.map((w) => [w.kind, w.key])).toEqual([['tampered', planted]]);
    const v = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(v.chains[0]!.verifiedSeq).toBe(7);
    expect(v.problems.map((p) => [p.kind, p.key])).toEqual([['tampered', planted]]);
    // And again: nothing new, nothing refused.
    const again = await exportAuditChains(reader, settings, signed());
    expect(again.chains[0]).toMatchObject({ segments: [], archivedSeq: 7 });
    expect(again.chains[0]!.error).toBeUndefined();
  });

  it('planted objects ahead of the chain (a gap, garbage) and behind it are skipped', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('a', decisions(2));
    await plant(settings.bucket, 'audit/a/000000000001-000000000002.jsonl', '{"seq":1}\n{"seq":2}\n');
    await plant(settings.bucket, 'audit/a/000000000050-000000000050.jsonl', '{"seq":50}\n');
    const r = await exportAuditChains(reader, settings, signed());
    expect(r.chains[0]).toMatchObject({ archivedSeq: 3 });
    expect(r.chains[0]!.error).toBeUndefined();
    expect(r.chains[0]!.warnings.map((w) => w.kind)).toEqual(['tampered', 'tampered']);
    const v = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(v.chains[0]!.verifiedSeq).toBe(3);
    expect(v.problems.map((p) => p.kind)).toEqual(['tampered', 'tampered']);
  });

  it('the next segment key squatted (garbage, or the right records unlocked): written under a key nobody could claim in advance', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('a', decisions(2));
    expect((await exportAuditChains(reader, settings, signed())).ok).toBe(true);
    reader.append('a', decisions(1));
    reader.append('b', decisions(1));
    const squatA = 'audit/a/000000000004-000000000005.jsonl';
    await plant(settings.bucket, squatA, 'garbage\n');
    // b: the genuine records (read from the table) put first, without a lock, at the key export will use.
    const squatB = 'audit/b/000000000001-000000000002.jsonl';
    await plant(settings.bucket, squatB, `${reader.chains.get('b')!.lines.join('\n')}\n`, false);
    const r = await exportAuditChains(reader, settings, signed());
    expect(r.chains.map((c) => [c.chainId, c.error, c.archivedSeq])).toEqual([
      ['a', undefined, 5],
      ['b', undefined, 2],
    ]);
    const [a, b] = r.chains;
    expect(a!.segments).toEqual([expect.objectContaining({ firstSeq: 4, lastSeq: 5, written: true, key: expect.stringMatching(/^audit\/a\/000000000004-000000000005\.[0-9a-f]{16}\.jsonl$/) })]);
    expect(a!.warnings.map((w) => [w.kind, w.key])).toEqual([
      ['tampered', squatA],
      ['conflict', squatA],
    ]);
    expect(b!.segments).toEqual([expect.objectContaining({ firstSeq: 1, lastSeq: 2, written: true, key: expect.stringMatching(/^audit\/b\/000000000001-000000000002\.[0-9a-f]{16}\.jsonl$/) })]);
    expect(b!.warnings.map((w) => [w.kind, w.key])).toEqual([
      ['not-locked', squatB],
      ['conflict', squatB],
    ]);
    expect(await keysIn(settings.bucket)).toHaveLength(5);
    // The next run: nothing new, nothing rewritten; the squatted keys stay reported.
    const again = await exportAuditChains(reader, settings, signed());
    expect(again.chains.map((c) => [c.chainId, c.error, c.archivedSeq, c.segments.length])).toEqual([
      ['a', undefined, 5, 0],
      ['b', undefined, 2, 0],
    ]);
    const v = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(v.chains.map((c) => [c.chainId, c.verifiedSeq])).toEqual([
      ['a', 5],
      ['b', 2],
    ]);
    expect(v.problems.map((p) => [p.kind, p.key])).toEqual([
      ['tampered', squatA],
      ['not-locked', squatB],
    ]);
  });
});

describe('the walk keeps what the old "highest segment" lookup did', () => {
  it('leading segments pruned after their retention: export goes on after the remaining ones (the table holds their first record), nothing rewritten', async () => {
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    reader.append('a', decisions(2));
    reader.append('a', decisions(2));
    await exportAuditChains(reader, settings, { ...signed(), limits: { maxLines: 3 } }); // 1-3, 4-6
    // The same archive with 1-3 gone (pruned): a new bucket holding 4-6 only, compliance-locked.
    const pruned = await lockedBucket();
    const k = 'audit/a/000000000004-000000000006.jsonl';
    const text = `${reader.chains.get('a')!.lines.slice(3).join('\n')}\n`;
    await plant(pruned.bucket, k, text);
    reader.append('a', decisions(1));
    const r = await exportAuditChains(reader, pruned, signed());
    expect(r.chains[0]!.error).toBeUndefined();
    expect(r.chains[0]!.warnings).toEqual([]);
    expect(r.chains[0]!.segments.map((s) => [s.firstSeq, s.lastSeq])).toEqual([[7, 8]]);
    expect(await keysIn(pruned.bucket)).toEqual([k, 'audit/a/000000000007-000000000008.jsonl']);
    expect((await verifyAuditArchive(pruned, key.publicKey, { reader, fromSeq: 4 })).problems).toEqual([]);
  });
});

describe('F5: export / verify-archive failure paths in --json', () => {
  let n = 0;
  function config(body: Record<string, unknown>): string {
    const file = join(dir, `config-${++n}.json`);
    writeFileSync(file, JSON.stringify({ stateDir: join(dir, `state-${n}`), ...body }));
    return file;
  }
  function expectJsonFailure(r: Run, code?: string): void {
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stderr).not.toMatch(/internal error/);
    expect({ status: r.status }).toEqual({ status: 1 });
    const parsed = JSON.parse(r.stdout) as { ok?: boolean; error?: { code?: string } };
    expect(parsed.ok).toBe(false);
    expect(parsed.error?.code).toMatch(code ?? /^[A-Z_]+$/);
  }
  const withMoto = (): void => void Object.assign(process.env, moto.env);
  const keyFile = (): string => {
    const file = join(dir, 'pub.pem');
    writeFileSync(file, generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }));
    return file;
  };
  const archiveConfig = (): string =>
    config({ store: { kind: 'dynamodb', table: uniqueName('s') }, audit: { kind: 'dynamodb', table: uniqueName('a'), archive: { bucket: uniqueName('b').toLowerCase(), retentionDays: 1 } } });

  it('audit export --json without any key source: {"ok":false,"error":{"code":"AUDIT_NO_KEY"}}, exit 1; in text too', async () => {
    withMoto();
    const c = archiveConfig();
    expectJsonFailure(await cli(['audit', 'export', '--config', c, '--json']), 'AUDIT_NO_KEY');
    const text = await cli(['audit', 'export', '--config', c]);
    expect(text.status).toBe(1);
    expect(text.stderr).toMatch(/^keygate audit export: AUDIT_NO_KEY: .*--key.*--no-signatures/);
    expectJsonFailure(await cli(['audit', 'verify-archive', '--config', c, '--json']), 'AUDIT_NO_KEY');
  });

  it('audit export --json --key with an audit table that does not exist, verify-archive with the bucket missing: exit 1 with a code', async () => {
    withMoto();
    const c = archiveConfig();
    expectJsonFailure(await cli(['audit', 'export', '--config', c, '--key', keyFile(), '--json']));
    expectJsonFailure(await cli(['audit', 'verify-archive', '--config', c, '--key', keyFile(), '--json']));
  });

  it('--key that cannot be loaded: a usage error (exit 2), never a stack trace', async () => {
    withMoto();
    const settings = await lockedBucket();
    const reader = new MemoryChainReader(key.signer);
    const context: ArchiveContextSource = async () => ({ settings, reader });
    let out = '';
    const io = { out: (t: string) => void (out += t), err: (t: string) => void (out += t), stdin: async function* () {} };
    await expect(auditArchiveCommand(['export', '--key', join(dir, 'missing.pem'), '--json'], io, Date.now, context)).rejects.toMatchObject({ code: 'USAGE' });
    const r = await cli(['audit', 'export', '--config', archiveConfig(), '--key', join(dir, 'missing.pem'), '--json']);
    expect(r.status).toBe(2);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('keygate audit verify --config --archive without any key source', () => {
  it('is a coded refusal (AUDIT_NO_KEY, exit 1; JSON with --json), like audit export', async () => {
    const { cli } = await import('../support/cli.js');
    const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'keygate-nokey-'));
    try {
      const config = join(dir, 'c.json');
      writeFileSync(config, JSON.stringify({ store: join(dir, 'store'), stateDir: join(dir, 'state'), audit: { kind: 'dynamodb', table: 'keygate-audit-nokey', archive: { bucket: 'keygate-nokey', retentionDays: 1 } } }));
      const json = await cli(['audit', 'verify', '--config', config, '--archive', '--json']);
      expect(json.status).toBe(1);
      expect(JSON.parse(json.stdout)).toMatchObject({ ok: false, error: { code: 'AUDIT_NO_KEY' } });
      const text = await cli(['audit', 'verify', '--config', config, '--archive']);
      expect([text.status, text.stdout]).toEqual([1, expect.stringMatching(/AUDIT_NO_KEY: --archive needs the broker key/)]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
