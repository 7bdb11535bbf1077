/**
 * Regression tests for an adversarial review of the S3 audit archive, against moto_server's S3:
 * - a plain DeleteObject (a delete marker) hides a compliance-locked segment from ListObjectsV2 / GetObject
 *   while the locked version survives: verification and export look at every version (ListObjectVersions);
 * - an unlocked object whose key claims a range is not "archived"; the table must still hold the archived head;
 * - export without the broker key would lock a rewritten table into the archive: it needs the key, or an
 *   explicit --no-signatures that the output states;
 * - retention running out is informational, not a failure; pruned leading segments verify only with --from-seq.
 * moto 5.2.1 implements ListObjectVersions with DeleteMarkers as S3 does (newest first per key, a marker
 * hides the version from ListObjectsV2 and GetObject, GetObject by VersionId still returns it).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, ListObjectVersionsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { exportAuditChains } from '../../broker/audit/archive/export.js';
import { verifyAuditArchive } from '../../broker/audit/archive/verify.js';
import { initArchiveBucket } from '../../broker/audit/archive/open-archive.js';
import type { AuditArchiveSettings } from '../../broker/audit/settings.js';
import { chainGenesis, lineHash } from '../../broker/audit/chain.js';
import { auditArchiveCommand, type ArchiveContextSource } from '../../cli/commands/audit-archive.js';
import { MemoryChainReader, decisions, testAuditKey, type TestAuditKey } from '../support/memory-chains.js';
import { awsOf, startMoto, uniqueName, type Moto } from '../support/moto.js';

let moto: Moto;
let s3: S3Client;
let key: TestAuditKey;
let dir: string;

beforeAll(async () => {
  moto = await startMoto();
  s3 = new S3Client({ ...awsOf(moto), forcePathStyle: true });
  key = testAuditKey();
  dir = mkdtempSync(join(tmpdir(), 'keygate-archive-atk-'));
}, 90_000);
afterAll(async () => {
  s3?.destroy();
  await moto?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const PREFIX = 'kg/';
const DAY = 86_400_000;
const settingsFor = (bucket: string, extra: Partial<AuditArchiveSettings> = {}): AuditArchiveSettings => ({
  bucket,
  prefix: PREFIX,
  retentionDays: 1,
  ...awsOf(moto),
  requestTimeoutMs: 30_000,
  ...extra,
});
async function lockedBucket(extra: Partial<AuditArchiveSettings> = {}): Promise<AuditArchiveSettings> {
  const settings = settingsFor(uniqueName('kg-atk').toLowerCase(), extra);
  await initArchiveBucket(settings);
  return settings;
}
/** Every version and delete marker under `prefix`, as [key, 'version' | 'marker']. */
async function versionsIn(bucket: string, prefix = ''): Promise<Array<[string, string]>> {
  const out = await s3.send(new ListObjectVersionsCommand({ Bucket: bucket, Prefix: prefix }));
  return [...(out.Versions ?? []).map((v): [string, string] => [v.Key!, 'version']), ...(out.DeleteMarkers ?? []).map((m): [string, string] => [m.Key!, 'marker'])].sort();
}
const readerWith = (batches: Record<string, number[]>): MemoryChainReader => MemoryChainReader.withBatches(key.signer, batches);
/** Rolls a chain "in the table" back to its first `keep` lines (records deleted, head item rewound with them). */
function rollBack(reader: MemoryChainReader, chainId: string, keep: number): void {
  const c = reader.chains.get(chainId)!;
  const lines = c.lines.slice(0, keep);
  reader.chains.set(chainId, { lines, head: { seq: keep, prevHash: keep ? lineHash(lines[keep - 1]!) : chainGenesis(chainId) } });
}
const signed = (): { publicKey: TestAuditKey['publicKey'] } => ({ publicKey: key.publicKey });

describe('delete markers do not hide locked segments', () => {
  it('a delete marker over the last segment + the table rolled back with it: verify-archive reports both', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2], b: [1] });
    expect((await exportAuditChains(reader, settings, signed())).ok).toBe(true);
    reader.append('a', decisions(3, 'incriminating'));
    expect((await exportAuditChains(reader, settings, signed())).ok).toBe(true);
    const last = `${PREFIX}a/000000000004-000000000007.jsonl`;
    // A plain DeleteObject (no VersionId) is allowed under compliance retention: it adds a delete marker.
    await s3.send(new DeleteObjectCommand({ Bucket: settings.bucket, Key: last }));
    expect(await versionsIn(settings.bucket, last)).toEqual([
      [last, 'marker'],
      [last, 'version'],
    ]);
    rollBack(reader, 'a', 3);
    const check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.ok).toBe(false);
    expect(check.problems.map((p) => [p.kind, p.chainId, p.key ?? p.seq])).toEqual([
      ['delete-marker', 'a', last],
      ['table-behind', 'a', 7],
    ]);
    // The hidden version was read by its VersionId and verified: the archive still proves records 4..7.
    expect(check.chains.find((c) => c.chainId === 'a')!.verifiedSeq).toBe(7);
  });

  it('delete markers over every segment of a chain + the chain deleted from the table: reported', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2], victim: [2, 1] });
    expect((await exportAuditChains(reader, settings, { ...signed(), limits: { maxLines: 3 } })).ok).toBe(true);
    const victimKeys = (await versionsIn(settings.bucket, `${PREFIX}victim/`)).map(([k]) => k);
    expect(victimKeys).toHaveLength(2);
    for (const k of victimKeys) await s3.send(new DeleteObjectCommand({ Bucket: settings.bucket, Key: k }));
    reader.chains.delete('victim');
    const check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.ok).toBe(false);
    expect(check.problems.map((p) => [p.kind, p.chainId])).toEqual([
      ['delete-marker', 'victim'],
      ['delete-marker', 'victim'],
      ['chain-deleted', 'victim'],
    ]);
    expect(check.chains.find((c) => c.chainId === 'victim')!.verifiedSeq).toBe(5);
  });

  it('export reports a delete marker (a warning: the hidden locked version still links), goes on after it, and adds no version under the hidden key', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2] });
    await exportAuditChains(reader, settings, signed());
    const k = `${PREFIX}a/000000000001-000000000003.jsonl`;
    await s3.send(new DeleteObjectCommand({ Bucket: settings.bucket, Key: k }));
    reader.append('a', decisions(1));
    // Semantics changed on purpose (review 2, F2): refusing would let anyone with s3:DeleteObject stop the chain.
    const again = await exportAuditChains(reader, settings, signed());
    expect(again.ok).toBe(true);
    expect(again.chains[0]!.warnings.map((w) => [w.kind, w.key])).toEqual([['delete-marker', k]]);
    expect(again.chains[0]!.segments.map((s) => [s.key, s.firstSeq, s.lastSeq])).toEqual([[`${PREFIX}a/000000000004-000000000005.jsonl`, 4, 5]]);
    expect(await versionsIn(settings.bucket)).toEqual([
      [k, 'marker'],
      [k, 'version'],
      [`${PREFIX}a/000000000004-000000000005.jsonl`, 'version'],
    ]);
  });
});

describe('export trusts only locked segments and a table that still holds them', () => {
  it('an unlocked object whose key claims a huge range is not counted (a warning), the chain is exported past it, and verify reports it', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2] });
    const fake = `${PREFIX}a/000000000001-999999999999.jsonl`;
    await s3.send(new PutObjectCommand({ Bucket: settings.bucket, Key: fake, Body: '{"seq":999999999999}\n', ChecksumAlgorithm: 'SHA256' }));
    reader.append('a', decisions(5, 'never-archived'));
    // Semantics changed on purpose (review 2, F2): skipped and reported, not a refusal of the chain.
    const r = await exportAuditChains(reader, settings, signed());
    expect(r.ok).toBe(true);
    expect(r.chains[0]!.warnings.map((w) => [w.kind, w.key])).toEqual([['not-locked', fake]]);
    expect(r.chains[0]!.archivedSeq).toBe(reader.chains.get('a')!.lines.length);
    const check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.problems.filter((p) => p.key === fake).map((p) => p.kind)).toContain('not-locked');
  });

  it('a table rolled back (or rewritten) behind the archive is refused (ARCHIVE_CHAIN_BROKEN)', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2, 3], b: [2] });
    expect((await exportAuditChains(reader, settings, signed())).ok).toBe(true);
    rollBack(reader, 'a', 3); // records 4..7 deleted from the table, head item rewound
    // b rewritten from its genesis with the same length and valid seals: the archived head's bytes differ.
    const forged = new MemoryChainReader(key.signer);
    forged.append('b', decisions(2, 'forged'));
    reader.chains.set('b', forged.chains.get('b')!);
    const r = await exportAuditChains(reader, settings, signed());
    expect(r.chains.map((c) => [c.chainId, c.error?.code])).toEqual([
      ['a', 'ARCHIVE_CHAIN_BROKEN'],
      ['b', 'ARCHIVE_CHAIN_BROKEN'],
    ]);
    expect(r.chains[0]!.error?.message).toMatch(/archived up to seq 7.*table.*seq 3/);
    expect(r.chains[1]!.error?.message).toMatch(/record 3 .*differs/);
  });

  it('without a key, export refuses (AUDIT_NO_KEY, exit 1) unless --no-signatures, which it states; with the key a rewritten table is refused', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2, 2] });
    // The table admin edits record 1 and recomputes every later prevHash (seals keep their stale signatures).
    const c = reader.chains.get('a')!;
    let prev = chainGenesis('a');
    const lines = c.lines.map((line, i) => {
      const rec = JSON.parse(line) as Record<string, unknown>;
      if (i === 0) rec.decision = 'deny';
      rec.prevHash = prev;
      const out = JSON.stringify({ seq: rec.seq, prevHash: rec.prevHash, ...rec });
      prev = lineHash(out);
      return out;
    });
    reader.chains.set('a', { lines, head: { seq: lines.length, prevHash: prev } });
    const context: ArchiveContextSource = async () => ({ settings, reader });
    let out = '';
    const io = { out: (t: string) => void (out += t), err: (t: string) => void (out += t), stdin: async function* () {} };
    // The in-process config has no shared keys and no --key: AUDIT_NO_KEY (exit 1), nothing written.
    expect(await auditArchiveCommand(['export'], io, Date.now, context)).toBe(1);
    expect(out).toMatch(/^keygate audit export: AUDIT_NO_KEY: .*--key.*--no-signatures/);
    out = '';
    expect(await versionsIn(settings.bucket)).toEqual([]);
    const r = await exportAuditChains(reader, settings, signed());
    expect(r.chains[0]!.error?.code).toBe('ARCHIVE_CHAIN_BROKEN');
    expect(r.chains[0]!.error?.message).toMatch(/seal signature does not verify/);
    expect(await versionsIn(settings.bucket)).toEqual([]);
    // --no-signatures: the operator's explicit choice, stated in the output (and in the JSON report).
    const status = await auditArchiveCommand(['export', '--no-signatures'], io, Date.now, context);
    expect(status).toBe(0);
    expect(out).toMatch(/SEAL SIGNATURES NOT CHECKED/);
  });
});

describe('verify-archive over time', () => {
  it('an untouched archive still verifies after its segments reach their retention date (reported, counted)', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2] });
    const t0 = Date.now();
    await exportAuditChains(reader, settings, { ...signed(), now: () => t0 });
    const fresh = await verifyAuditArchive(settings, key.publicKey, { reader, now: () => t0 });
    expect(fresh).toMatchObject({ ok: true, retentionExpired: 0 });
    const later = await verifyAuditArchive(settings, key.publicKey, { reader, now: () => t0 + 2 * DAY });
    expect(later.problems).toEqual([]);
    expect(later).toMatchObject({ ok: true, retentionExpired: 1 });
  });

  /** Copies an archive into a new Object Lock bucket, each object with `lock` (undefined: none), leaving out `skip`. */
  async function copyWith(from: AuditArchiveSettings, lock: { mode: 'COMPLIANCE' | 'GOVERNANCE'; ms: number } | undefined, skip: (k: string) => boolean = () => false): Promise<AuditArchiveSettings> {
    const to = settingsFor(uniqueName('kg-atk').toLowerCase());
    await s3.send(new CreateBucketCommand({ Bucket: to.bucket, ObjectLockEnabledForBucket: true }));
    for (const [k] of await versionsIn(from.bucket)) {
      if (skip(k)) continue;
      const body = await (await s3.send(new GetObjectCommand({ Bucket: from.bucket, Key: k }))).Body!.transformToString();
      await s3.send(
        new PutObjectCommand({
          Bucket: to.bucket,
          Key: k,
          Body: body,
          ChecksumAlgorithm: 'SHA256',
          ...(lock ? { ObjectLockMode: lock.mode, ObjectLockRetainUntilDate: new Date(Date.now() + lock.ms) } : {}),
        }),
      );
    }
    return to;
  }

  it('GOVERNANCE mode, no lock, or a retention shorter than configured are still problems', async () => {
    const settings = await lockedBucket();
    await exportAuditChains(readerWith({ a: [2] }), settings, signed());
    const kinds = async (s: AuditArchiveSettings): Promise<string[]> => (await verifyAuditArchive(s, key.publicKey)).problems.map((p) => p.kind);
    expect(await kinds(await copyWith(settings, { mode: 'GOVERNANCE', ms: 2 * DAY }))).toEqual(['not-locked']);
    expect(await kinds(await copyWith(settings, undefined))).toEqual(['not-locked']);
    expect(await kinds(await copyWith(settings, { mode: 'COMPLIANCE', ms: 3_600_000 }))).toEqual(['short-retention']);
    expect(await kinds(await copyWith(settings, { mode: 'COMPLIANCE', ms: 2 * DAY }))).toEqual([]);
  });

  it('pruned leading segments: a gap from genesis, verified from the first present segment only with fromSeq', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2, 2, 2] });
    await exportAuditChains(reader, settings, { ...signed(), limits: { maxLines: 3 } }); // 1-3, 4-6, 7-9
    const pruned = await copyWith(settings, { mode: 'COMPLIANCE', ms: 2 * DAY }, (k) => k.endsWith('000000000001-000000000003.jsonl'));
    const strict = await verifyAuditArchive(pruned, key.publicKey, { reader });
    expect(strict.problems.map((p) => [p.kind, p.seq])).toEqual([['gap', 1]]);
    const from = await verifyAuditArchive(pruned, key.publicKey, { reader, fromSeq: 4 });
    expect(from.problems).toEqual([]);
    expect(from.chains).toEqual([expect.objectContaining({ chainId: 'a', fromSeq: 4, verifiedSeq: 9 })]);
    // The CLI says so.
    const jwk = join(dir, 'key.jwk');
    writeFileSync(jwk, JSON.stringify(key.publicKey.export({ format: 'jwk' })));
    let out = '';
    const io = { out: (t: string) => void (out += t), err: (t: string) => void (out += t), stdin: async function* () {} };
    const context: ArchiveContextSource = async () => ({ settings: pruned, reader });
    expect(await auditArchiveCommand(['verify-archive', '--key', jwk, '--from-seq', '4'], io, Date.now, context)).toBe(0);
    expect(out).toMatch(/chain a: 2 segment\(s\), verified from seq 4 \(records 1\.\.3 not in the archive: pruned, allowed by --from-seq 4\) up to seq 9\n.*intact, table matches it/s);
    out = '';
    expect(await auditArchiveCommand(['verify-archive', '--key', jwk, '--from-seq', '4'], io, () => Date.now() + 3 * DAY, context)).toBe(0);
    expect(out).toMatch(/2 segment\(s\) past their retention date.*\(retention expired on 2 segment\(s\)\)/s);
    // fromSeq allows only records before it to be missing.
    expect((await verifyAuditArchive(pruned, key.publicKey, { reader, fromSeq: 3 })).problems.map((p) => p.kind)).toEqual(['gap']);
    // An edited record after the anchor is still found.
    reader.chains.get('a')!.lines[7] = reader.chains.get('a')!.lines[7]!.replace('"release"', '"denied"');
    expect((await verifyAuditArchive(pruned, key.publicKey, { reader, fromSeq: 4 })).problems.map((p) => [p.kind, p.seq])).toEqual([['table-edited', 8]]);
  });
});

describe('the table head against the archived head', () => {
  it('a table whose head item is behind the archive is reported (table-behind), even with its records still there', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2, 1] });
    await exportAuditChains(reader, settings, signed());
    const c = reader.chains.get('a')!;
    reader.chains.set('a', { lines: c.lines, head: { seq: 3, prevHash: lineHash(c.lines[2]!) } });
    const check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.problems.map((p) => [p.kind, p.seq])).toEqual([['table-behind', 5]]);
  });
});

describe('the version listing', () => {
  it('pages through ListObjectVersions (moto as S3: NextKeyMarker / NextVersionIdMarker), versions and markers of a key together', async () => {
    const settings = await lockedBucket();
    await exportAuditChains(readerWith({ a: [1, 1, 1], b: [1] }), settings, { ...signed(), limits: { maxLines: 2 } });
    const k = `${PREFIX}a/000000000003-000000000004.jsonl`;
    await s3.send(new DeleteObjectCommand({ Bucket: settings.bucket, Key: k }));
    await s3.send(new PutObjectCommand({ Bucket: settings.bucket, Key: k, Body: 'forged\n', ChecksumAlgorithm: 'SHA256' }));
    const { S3ArchiveStore } = await import('../../broker/audit/archive/s3-archive.js');
    const paged = new S3ArchiveStore(settings, process.env, { pageSize: 1 });
    const whole = new S3ArchiveStore(settings);
    try {
      const all = await whole.listVersions(PREFIX);
      expect(await paged.listVersions(PREFIX)).toEqual(all);
      expect(all.map((e) => [e.key.slice(PREFIX.length), e.versions.length, e.deleteMarkers])).toEqual([
        ['a/000000000001-000000000002.jsonl', 1, 0],
        ['a/000000000003-000000000004.jsonl', 2, 1],
        ['a/000000000005-000000000006.jsonl', 1, 0],
        ['b/000000000001-000000000002.jsonl', 1, 0],
      ]);
      // The oldest version is export's: still the genuine segment.
      const original = all[1]!.versions[1]!;
      expect((await whole.get(k, original.versionId)).body.toString()).toMatch(/^\{"seq":3,/);
    } finally {
      paged.close();
      whole.close();
    }
  });
});
