/**
 * The S3 audit archive (`keygate audit export` / `verify-archive`) against
 * moto_server's S3 (an independent implementation that enforces Object Lock):
 * sealed segments in compliance mode, idempotent export, refusal of a
 * tampered table, and verification of the archive and of the table against it.
 * Chains come from an in-memory AuditChainReader built with the real chain
 * format (the DynamoDB reader implements the same interface).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { exportAuditChains, type ArchiveExport } from '../../broker/audit/archive/export.js';
import { verifyAuditArchive } from '../../broker/audit/archive/verify.js';
import { initArchiveBucket, openArchiveStore } from '../../broker/audit/archive/open-archive.js';
import { segmentLines } from '../../broker/audit/archive/segmenter.js';
import type { ArchiveObjectStore } from '../../broker/audit/archive/object-store.js';
import type { AuditArchiveSettings } from '../../broker/audit/settings.js';
import { ArchiveError } from '../../broker/audit/archive/errors.js';
import { auditArchiveCommand, type ArchiveContextSource } from '../../cli/commands/audit-archive.js';
import { cli } from '../support/cli.js';
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
  dir = mkdtempSync(join(tmpdir(), 'keygate-archive-'));
});
afterAll(async () => {
  s3?.destroy();
  await moto?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const PREFIX = 'keygate/audit/';
const bucketName = (): string => uniqueName('kg-arch').toLowerCase();
const settingsFor = (bucket: string, extra: Partial<AuditArchiveSettings> = {}): AuditArchiveSettings => ({
  bucket,
  prefix: PREFIX,
  retentionDays: 1,
  ...awsOf(moto),
  requestTimeoutMs: 30_000,
  ...extra,
});

/** A new bucket with Object Lock, made the way `keygate store init` makes it. */
async function lockedBucket(): Promise<AuditArchiveSettings> {
  const settings = settingsFor(bucketName());
  await initArchiveBucket(settings);
  return settings;
}

async function keysIn(bucket: string): Promise<string[]> {
  const store = await openArchiveStore(settingsFor(bucket));
  try {
    return (await store.listVersions('')).map((k) => k.key);
  } finally {
    store.close();
  }
}

async function body(bucket: string, k: string): Promise<string> {
  const out = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: k }));
  return out.Body!.transformToString();
}

/**
 * Copies an archive into a new Object Lock bucket WITHOUT retention (so the test can leave a segment out or
 * edit one: a locked original cannot be changed), transformed by `edit` (undefined drops the object).
 */
async function copyArchive(from: string, edit: (key: string, text: string, index: number) => string | undefined): Promise<AuditArchiveSettings> {
  const to = settingsFor(bucketName());
  await s3.send(new CreateBucketCommand({ Bucket: to.bucket, ObjectLockEnabledForBucket: true }));
  const keys = await keysIn(from);
  for (const [i, k] of keys.entries()) {
    const text = edit(k, await body(from, k), i);
    if (text !== undefined) await s3.send(new PutObjectCommand({ Bucket: to.bucket, Key: k, Body: text, ChecksumAlgorithm: 'SHA256' }));
  }
  return to;
}

const written = (r: ArchiveExport): number => r.chains.reduce((n, c) => n + c.segments.filter((s) => s.written).length, 0);

const signed = (): { publicKey: TestAuditKey['publicKey'] } => ({ publicKey: key.publicKey });

const readerWith = (batches: Record<string, number[]>): MemoryChainReader => MemoryChainReader.withBatches(key.signer, batches);

describe('audit archive export', () => {
  it('initArchiveBucket creates the bucket with Object Lock, and again reports it exists', async () => {
    const settings = settingsFor(bucketName());
    expect((await initArchiveBucket(settings))[0]).toMatch(/created with Object Lock enabled/);
    expect((await initArchiveBucket(settings))[0]).toMatch(/exists, Object Lock enabled/);
  });

  it('exports sealed segments under compliance lock; a second run exports nothing; a new batch adds one segment', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ 'replica-a': [3, 1, 2], 'replica-b': [5] });
    const now = Date.now();
    const first = await exportAuditChains(reader, settings, { ...signed(), now: () => now });
    expect(first.ok).toBe(true);
    // 3+1 + 1+1 + 2+1 = 9 lines on replica-a (every batch ends in its seal), 6 on replica-b.
    expect(first.chains.map((c) => [c.chainId, c.archivedSeq, c.segments.map((s) => [s.firstSeq, s.lastSeq, s.written])])).toEqual([
      ['replica-a', 9, [[1, 9, true]]],
      ['replica-b', 6, [[1, 6, true]]],
    ]);
    expect(await keysIn(settings.bucket)).toEqual([`${PREFIX}replica-a/000000000001-000000000009.jsonl`, `${PREFIX}replica-b/000000000001-000000000006.jsonl`]);
    const head = await s3.send(new GetObjectCommand({ Bucket: settings.bucket, Key: `${PREFIX}replica-a/000000000001-000000000009.jsonl` }));
    expect(head.ObjectLockMode).toBe('COMPLIANCE');
    // retentionDays 1 from the export's clock (to the second: AWS keeps retention dates in seconds).
    expect(Math.abs(head.ObjectLockRetainUntilDate!.getTime() - (now + 86_400_000))).toBeLessThan(1000);
    expect(head.ContentType).toBe('application/x-ndjson');
    expect(await head.Body!.transformToString()).toBe(`${reader.chains.get('replica-a')!.lines.join('\n')}\n`);

    const again = await exportAuditChains(reader, settings, signed());
    expect(again.ok).toBe(true);
    expect(written(again)).toBe(0);
    expect(again.chains.map((c) => c.segments.length)).toEqual([0, 0]);

    reader.append('replica-a', decisions(4, 'later'));
    const third = await exportAuditChains(reader, settings, signed());
    expect(third.chains[0]!.segments).toEqual([expect.objectContaining({ firstSeq: 10, lastSeq: 14, written: true })]);
    expect(third.chains[1]!.segments).toEqual([]);

    const check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.problems).toEqual([]);
    expect(check.ok).toBe(true);
    expect(check.chains.map((c) => [c.chainId, c.segments, c.verifiedSeq])).toEqual([
      ['replica-a', 2, 14],
      ['replica-b', 1, 6],
    ]);
  });

  it('a compliance-locked segment cannot be deleted, and export never writes over it', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ r1: [2] });
    await exportAuditChains(reader, settings, signed());
    const k = `${PREFIX}r1/000000000001-000000000003.jsonl`;
    const original = await body(settings.bucket, k);
    const versions = (await s3.send(new ListObjectVersionsCommand({ Bucket: settings.bucket, Prefix: k }))).Versions!;
    expect(versions).toHaveLength(1);
    // AWS and moto both answer AccessDenied (403) for deleting a version under compliance retention, bypass or not.
    for (const bypass of [false, true]) {
      await expect(s3.send(new DeleteObjectCommand({ Bucket: settings.bucket, Key: k, VersionId: versions[0]!.VersionId, ...(bypass ? { BypassGovernanceRetention: true } : {}) }))).rejects.toMatchObject({
        name: 'AccessDenied',
        $metadata: { httpStatusCode: 403 },
      });
    }
    // Export's conditional put (If-None-Match: *) is refused with 412 on a taken key: it never adds a version.
    const store = await openArchiveStore(settings);
    try {
      expect(await store.putLocked(k, Buffer.from('forged\n'), new Date(Date.now() + 60_000))).toBe('exists');
    } finally {
      store.close();
    }
    // An unconditional PutObject (someone else's credentials with s3:PutObject) adds a NEW version, on AWS as on
    // moto: Object Lock protects versions, not keys. The locked original stays; verification reports the extra
    // version and checks the original (by its version id), which still verifies.
    await s3.send(new PutObjectCommand({ Bucket: settings.bucket, Key: k, Body: 'forged\n' }));
    const after = (await s3.send(new ListObjectVersionsCommand({ Bucket: settings.bucket, Prefix: k }))).Versions!;
    expect(after).toHaveLength(2);
    const kept = await s3.send(new GetObjectCommand({ Bucket: settings.bucket, Key: k, VersionId: versions[0]!.VersionId }));
    expect(await kept.Body!.transformToString()).toBe(original);
    const check = await verifyAuditArchive(settings, key.publicKey);
    expect(check.ok).toBe(false);
    expect(check.problems.map((p) => [p.kind, p.key])).toEqual([['extra-version', k]]);
    expect(check.chains[0]!.verifiedSeq).toBe(3);
    // ...and export reports it without refusing the chain (review 2, F2: anyone with s3:PutObject could add a
    // version and stop the chain forever): the original, read by version id, still links.
    const again = await exportAuditChains(reader, settings, signed());
    expect(again.chains[0]!.error).toBeUndefined();
    expect(again.chains[0]!.warnings.map((w) => [w.kind, w.key])).toEqual([['extra-version', k]]);
    expect(again.chains[0]!.archivedSeq).toBe(3);
  });

  it('a bucket without Object Lock is refused (ARCHIVE_NO_OBJECT_LOCK), a missing one too (ARCHIVE_NO_BUCKET): nothing written', async () => {
    const plain = settingsFor(bucketName());
    await s3.send(new CreateBucketCommand({ Bucket: plain.bucket }));
    const reader = readerWith({ r1: [1] });
    const refusal = exportAuditChains(reader, plain, signed());
    await expect(refusal).rejects.toBeInstanceOf(ArchiveError);
    await expect(refusal).rejects.toMatchObject({ code: 'ARCHIVE_NO_OBJECT_LOCK' });
    expect(await keysIn(plain.bucket)).toEqual([]);
    await expect(exportAuditChains(reader, settingsFor(bucketName()), signed())).rejects.toMatchObject({ code: 'ARCHIVE_NO_BUCKET' });
    // An existing bucket without lock is not "initialised" either.
    await expect(initArchiveBucket(plain)).rejects.toMatchObject({ code: 'ARCHIVE_NO_OBJECT_LOCK' });
  });

  it('a chain whose table records do not link to the archive is refused (ARCHIVE_CHAIN_BROKEN), nothing written for it; other chains export', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ good: [2], bad: [2] });
    await exportAuditChains(reader, settings, signed());
    // The table's "bad" chain is rewritten after export (same seqs, other content, valid seals): its next
    // records do not hash-link to the archived ones.
    const forged = new MemoryChainReader(key.signer);
    forged.append('bad', decisions(2, 'forged'));
    forged.append('bad', decisions(3, 'forged'));
    reader.chains.set('bad', forged.chains.get('bad')!);
    reader.append('good', decisions(1));
    const before = await keysIn(settings.bucket);
    const r = await exportAuditChains(reader, settings, signed());
    expect(r.ok).toBe(false);
    const bad = r.chains.find((c) => c.chainId === 'bad')!;
    expect(bad.error?.code).toBe('ARCHIVE_CHAIN_BROKEN');
    expect(bad.error?.message).toMatch(/archived up to seq 3 but the table's record 3 differs/);
    expect(bad.segments).toEqual([]);
    expect(bad.archivedSeq).toBe(3);
    expect(r.chains.find((c) => c.chainId === 'good')!.segments).toEqual([expect.objectContaining({ firstSeq: 4, lastSeq: 5, written: true })]);
    expect((await keysIn(settings.bucket)).filter((k) => !before.includes(k))).toEqual([`${PREFIX}good/000000000004-000000000005.jsonl`]);

    // Before any export: an edited record in the table is refused too (checked from the chain's genesis).
    const fresh = await lockedBucket();
    const edited = readerWith({ c: [3] });
    const lines = edited.chains.get('c')!.lines;
    lines[1] = lines[1]!.replace('"release"', '"denied"');
    const r2 = await exportAuditChains(edited, fresh, signed());
    expect(r2.chains[0]!.error?.code).toBe('ARCHIVE_CHAIN_BROKEN');
    expect(await keysIn(fresh.bucket)).toEqual([]);
  });

  it('with the public key, a seal under another key is refused before export', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ c: [2] });
    reader.append('c', decisions(1), testAuditKey('other').signer);
    const r = await exportAuditChains(reader, settings, { publicKey: key.publicKey, limits: { maxLines: 3 } });
    expect(r.chains[0]!.error?.code).toBe('ARCHIVE_CHAIN_BROKEN');
    expect(r.chains[0]!.error?.message).toMatch(/at seq 5 .*seal signature does not verify/);
    // The first batch (validly sealed) went out in its own segment; the forged seal's batch did not.
    expect(r.chains[0]!.segments.map((s) => [s.firstSeq, s.lastSeq])).toEqual([[1, 3]]);
    expect(await keysIn(settings.bucket)).toEqual([`${PREFIX}c/000000000001-000000000003.jsonl`]);
  });

  it('two exports at once write each segment once, and the archive verifies', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ a: [2, 2, 2], b: [1, 1] });
    const small = { limits: { maxLines: 3 } };
    const [x, y] = await Promise.all([exportAuditChains(reader, settings, { ...signed(), ...small }), exportAuditChains(reader, settings, { ...signed(), ...small })]);
    expect(x.ok && y.ok).toBe(true);
    const keys = await keysIn(settings.bucket);
    expect(written(x) + written(y)).toBe(keys.length);
    expect((await verifyAuditArchive(settings, key.publicKey, { reader })).problems).toEqual([]);
  });

  it('segments end on seals and stay within bounds, for random batch sizes (exported to S3 and verified)', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ r: [1, 7, 2, 1, 12, 3, 1, 1, 5] });
    const r = await exportAuditChains(reader, settings, { ...signed(), limits: { maxLines: 8 } });
    expect(r.ok).toBe(true);
    for (const s of r.chains[0]!.segments) {
      const text = await body(settings.bucket, s.key);
      const lines = text.trimEnd().split('\n');
      expect(JSON.parse(lines[lines.length - 1]!).type).toBe('seal');
      expect(lines.length <= 8 || lines.filter((l) => JSON.parse(l).type === 'seal').length === 1).toBe(true);
    }
    expect((await verifyAuditArchive(settings, key.publicKey, { reader })).ok).toBe(true);
  });
});

describe('module loading', () => {
  it('only the S3 module loads the AWS SDK: export, verify and the CLI command load it on demand', () => {
    const root = new URL('../../', import.meta.url);
    const dirFiles = readdirSync(new URL('broker/audit/archive/', root)).filter((f) => f.endsWith('.ts'));
    const staticSdk = (file: string): boolean => /(?:^|\n)\s*import(?!\s+type\b)[^'"]*?from\s+['"]@aws-sdk\//.test(readFileSync(new URL(file, root), 'utf8'));
    expect(dirFiles.filter((f) => staticSdk(`broker/audit/archive/${f}`))).toEqual(['s3-archive.ts']);
    expect(staticSdk('cli/commands/audit-archive.ts')).toBe(false);
    expect(readFileSync(new URL('cli/commands/audit-archive.ts', root), 'utf8')).not.toMatch(/^import (?!type\b)[^\n]*archive\/(export|verify|s3-archive|open-archive)\.js/m);
  });

});

describe('segmenter (property)', () => {
  it('every segment ends on a seal, segments are contiguous, within bounds unless one batch is larger, and only the unsealed tail is left', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 15 }), { minLength: 0, maxLength: 20 }), fc.integer({ min: 1, max: 20 }), fc.integer({ min: 100, max: 3000 }), fc.integer({ min: 0, max: 4 }), async (sizes, maxLines, maxBytes, tail) => {
        const reader = readerWith({ c: sizes });
        const sealed = reader.chains.get('c')?.lines ?? [];
        const unsealed = Array.from({ length: tail }, (_, i) => JSON.stringify({ seq: sealed.length + 1 + i, type: 'decision' }));
        const state = { pending: -1 };
        const segments = [];
        for await (const s of segmentLines((async function* () { yield* [...sealed, ...unsealed]; })(), { maxLines, maxBytes }, state)) segments.push(s);
        expect(segments.flatMap((s) => s.lines)).toEqual(sealed);
        expect(state.pending).toBe(tail);
        let next = 1;
        for (const s of segments) {
          expect(s.firstSeq).toBe(next);
          expect(JSON.parse(s.lines[s.lines.length - 1]!).type).toBe('seal');
          const seals = s.lines.filter((l) => JSON.parse(l).type === 'seal').length;
          expect((s.lines.length <= maxLines && s.bytes <= maxBytes) || seals === 1).toBe(true);
          expect(s.bytes).toBe(Buffer.byteLength(`${s.lines.join('\n')}\n`));
          next = s.lastSeq + 1;
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('audit archive verification', () => {
  /** An archive of chain "c" in 4 segments (3 lines each), and "d" in 1. */
  async function archived(): Promise<{ settings: AuditArchiveSettings; reader: MemoryChainReader; keys: string[] }> {
    const settings = await lockedBucket();
    const reader = readerWith({ c: [2, 2, 2, 2], d: [1] });
    const r = await exportAuditChains(reader, settings, { ...signed(), limits: { maxLines: 3 } });
    expect(r.chains[0]!.segments).toHaveLength(4);
    return { settings, reader, keys: await keysIn(settings.bucket) };
  }

  it('reports a missing middle segment as a gap', async () => {
    const { settings } = await archived();
    const copy = await copyArchive(settings.bucket, (k, text) => (k.endsWith('000000000004-000000000006.jsonl') ? undefined : text));
    const check = await verifyAuditArchive(copy, key.publicKey);
    expect(check.ok).toBe(false);
    const gap = check.problems.filter((p) => p.kind === 'gap');
    expect(gap).toEqual([expect.objectContaining({ chainId: 'c', seq: 4, key: `${PREFIX}c/000000000007-000000000009.jsonl` })]);
    expect(gap[0]!.message).toMatch(/records 4\.\.6 of chain c are missing/);
    // The copy was written without retention: every object is reported as unlocked too.
    expect(check.problems.filter((p) => p.kind === 'not-locked')).toHaveLength(4);
  });

  it('reports an edited segment at the record after the edit', async () => {
    const { settings } = await archived();
    const copy = await copyArchive(settings.bucket, (k, text) => (k.endsWith('c/000000000004-000000000006.jsonl') ? text.replace('"release"', '"denied"') : text));
    const tampered = (await verifyAuditArchive(copy, key.publicKey)).problems.filter((p) => p.kind === 'tampered');
    expect(tampered).toEqual([expect.objectContaining({ chainId: 'c', seq: 5, key: `${PREFIX}c/000000000004-000000000006.jsonl` })]);
  });

  it('reports a seal signed under another key', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ c: [1] });
    reader.append('c', decisions(1), testAuditKey('intruder').signer);
    expect((await exportAuditChains(reader, settings, { publicKey: 'unchecked' })).ok).toBe(true); // --no-signatures: only the hash chain
    const check = await verifyAuditArchive(settings, key.publicKey);
    expect(check.problems).toEqual([expect.objectContaining({ kind: 'tampered', chainId: 'c', seq: 4 })]);
    expect(check.problems[0]!.message).toMatch(/seal signature does not verify/);
  });

  it('accepts an overlapping segment from a concurrent exporter only when it repeats the archive byte for byte', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ c: [2, 2] });
    await exportAuditChains(reader, settings, { ...signed(), limits: { maxLines: 3 } }); // 1-3, 4-6
    reader.append('c', decisions(2));
    // A second exporter that listed the chain before the first one wrote: it starts again at seq 1.
    const real = await openArchiveStore(settings);
    const stale: ArchiveObjectStore = { bucket: real.bucket, objectLockEnabled: () => real.objectLockEnabled(), listVersions: async () => [], get: (k, v) => real.get(k, v), putLocked: (k, b, u) => real.putLocked(k, b, u), close: () => real.close() };
    const r = await exportAuditChains(reader, settings, { ...signed(), store: stale });
    real.close();
    expect(r.chains[0]!.segments.map((s) => [s.firstSeq, s.lastSeq])).toEqual([[1, 9]]);
    const check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.problems).toEqual([]);
    expect(check.chains[0]!.verifiedSeq).toBe(9);
    const copy = await copyArchive(settings.bucket, (k, text) => (k.endsWith('000000000001-000000000009.jsonl') ? text.replace('"release"', '"denied"') : text));
    expect((await verifyAuditArchive(copy, key.publicKey)).problems.filter((p) => p.kind === 'tampered')).toEqual([expect.objectContaining({ seq: 1, key: `${PREFIX}c/000000000001-000000000009.jsonl` })]);
  });

  it('compares the table with the archive: an edited record, a deleted record, a deleted chain', async () => {
    const { settings, reader } = await archived();
    expect((await verifyAuditArchive(settings, key.publicKey, { reader })).ok).toBe(true);
    const c = reader.chains.get('c')!;
    c.lines[6] = c.lines[6]!.replace('"release"', '"denied"'); // seq 7
    let check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.problems).toEqual([expect.objectContaining({ kind: 'table-edited', chainId: 'c', seq: 7 })]);
    c.lines.splice(6, 1);
    check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.problems).toEqual([expect.objectContaining({ kind: 'table-missing', chainId: 'c', seq: 7 })]);
    reader.chains.delete('d');
    reader.append('new', decisions(1));
    check = await verifyAuditArchive(settings, key.publicKey, { reader });
    expect(check.problems.map((p) => [p.kind, p.chainId])).toEqual([
      ['table-missing', 'c'],
      ['chain-deleted', 'd'],
    ]);
    expect(check.notArchived).toEqual(['new']);
  });

  it('an empty archive is not reported as intact', async () => {
    const settings = await lockedBucket();
    const check = await verifyAuditArchive(settings, key.publicKey);
    expect(check.ok).toBe(false);
    expect(check.problems).toEqual([expect.objectContaining({ kind: 'empty' })]);
  });
});

describe('keygate audit export / verify-archive (in process, archive settings and table injected)', () => {
  const run = async (argv: string[], context: ArchiveContextSource): Promise<{ status: number; out: string; err: string }> => {
    let out = '';
    let err = '';
    const status = await auditArchiveCommand(argv, { out: (t) => void (out += t), err: (t) => void (err += t), stdin: async function* () {} }, Date.now, context);
    return { status, out, err };
  };
  const pubFile = (): string => {
    const file = join(dir, 'audit-key.jwk');
    writeFileSync(file, JSON.stringify(key.publicKey.export({ format: 'jwk' })));
    return file;
  };

  it('exports, reports per chain, exports nothing the second time, and verifies', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ alpha: [2, 1] });
    const context: ArchiveContextSource = async () => ({ settings, reader });
    const first = await run(['export', '--key', pubFile()], context);
    expect(first).toMatchObject({ status: 0, err: '' });
    expect(first.out).toMatch(/^chain alpha: 1 segment\(s\) written \(seq 1\.\.5, \d+ bytes\), archived up to seq 5\n/);
    const second = await run(['export', '--json', '--key', pubFile()], context);
    expect(second.status).toBe(0);
    expect(JSON.parse(second.out)).toMatchObject({ ok: true, chains: [{ chainId: 'alpha', segments: [], archivedSeq: 5 }] });
    const verify = await run(['verify-archive', '--key', pubFile()], context);
    expect(verify).toMatchObject({ status: 0 });
    expect(verify.out).toMatch(/chain alpha: 1 segment\(s\), verified up to seq 5\n.*intact, table matches it/s);
    reader.chains.get('alpha')!.lines.pop();
    const bad = await run(['verify-archive', '--key', pubFile(), '--json'], context);
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.out).problems).toEqual([expect.objectContaining({ kind: 'table-missing', seq: 5 })]);
  });

  it('a refused chain exits 1 with its code; a bucket without Object Lock exits 1 with ARCHIVE_NO_OBJECT_LOCK', async () => {
    const settings = await lockedBucket();
    const reader = readerWith({ x: [1] });
    await run(['export', '--key', pubFile()], async () => ({ settings, reader }));
    reader.chains.set('x', readerWith({ x: [2, 1] }).chains.get('x')!);
    const refused = await run(['export', '--key', pubFile()], async () => ({ settings, reader }));
    expect(refused.status).toBe(1);
    expect(refused.out).toMatch(/chain x: REFUSED ARCHIVE_CHAIN_BROKEN: /);
    const plain = settingsFor(bucketName());
    await s3.send(new CreateBucketCommand({ Bucket: plain.bucket }));
    const noLock = await run(['export', '--key', pubFile()], async () => ({ settings: plain, reader }));
    expect(noLock.status).toBe(1);
    expect(noLock.err).toMatch(/^keygate audit export: ARCHIVE_NO_OBJECT_LOCK: bucket .* does not have Object Lock enabled/);
  });

  it('through keygate: without an audit archive in the config it is a usage error; --help is served by the archive module', async () => {
    const config = join(dir, 'plain.json');
    writeFileSync(config, JSON.stringify({ store: join(dir, 'store'), stateDir: join(dir, 'state') }));
    const r = await cli(['audit', 'export', '--config', config]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/no audit archive configured/);
    const help = await cli(['audit', 'export', '--help']);
    expect(help).toMatchObject({ status: 0 });
    expect(help.stdout).toMatch(/^Usage: keygate audit export --config FILE/);
    expect((await cli(['audit', 'verify-archive', '--config', config])).stderr).toMatch(/no audit archive configured/);
    // With an archive but no key (none given, none in the shared keys): a usage error naming --key.
    const settings = await lockedBucket();
    const context: ArchiveContextSource = async () => ({ settings, reader: readerWith({ a: [1] }) });
    // (No key is the environment's problem, not the call's: AUDIT_NO_KEY, exit 1.)
    const noKey = await run(['verify-archive'], context);
    expect(noKey.status).toBe(1);
    expect(noKey.err).toMatch(/^keygate audit verify-archive: AUDIT_NO_KEY: verify-archive needs the broker public key: give --key/);
    await expect(run(['verify-archive', '--no-signatures'], context)).rejects.toMatchObject({ code: 'USAGE' });
    await expect(run(['export', '--no-signatures', '--key', pubFile()], context)).rejects.toMatchObject({ code: 'USAGE', message: expect.stringMatching(/exclude each other/) });
    await expect(run(['verify-archive', '--key', pubFile(), '--from-seq', '0'], context)).rejects.toMatchObject({ code: 'USAGE' });
  });
});
