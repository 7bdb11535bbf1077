import { access, mkdir, open, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { approveBaseline, formatBaseline, parseBaseline, signBaseline, type Approval, type Baseline, type BaselineBody } from '../policy/baseline.js';
import { SchemaError } from '../policy/schema.js';
import type { AllowRule } from '../policy/types.js';
import { pcrSet } from '../admin.js';
import { loadPrivateKeyFile } from '../signing-key.js';
import { createFileExclusive, writeFileAtomic } from '../../lib/durable-fs.js';
import { EifError, EIF_MAGIC } from '../eif/format.js';
import { describeEif, type DescribeEifOptions, type EifDescription } from '../eif/reader.js';
import { measurementsFromNitroCli } from '../eif/nitro-cli-json.js';
import { OperationError, unreadable } from './errors.js';
import { differingPcrs, IMAGE_PCRS, type ImagePcrs } from '../../lib/pcrs.js';

/**
 * Baseline operations: record a build's measurements, check a rebuild
 * against them, approve, create the keys that sign and approve, and turn a
 * baseline (or nitro-cli output) into an allow rule for a binding. The CLI
 * and a future admin API call these; they speak files and typed results,
 * never flags or exit codes.
 */

/** Where baselines live unless told otherwise. */
export const DEFAULT_BASELINE_DIR = 'pcr-baselines';

/** Resolves a baseline argument: an existing path, or NAME inside the baselines directory. */
export function baselinePath(arg: string, dir = DEFAULT_BASELINE_DIR): string {
  if (arg.includes('/') || arg.endsWith('.json')) return arg;
  return join(dir, `${arg}.json`);
}

/** @throws OperationError INPUT_UNREADABLE or BASELINE_INVALID */
export async function readBaseline(path: string): Promise<Baseline> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw unreadable(path, err, 'baseline ');
  }
  return validBaseline(json, path);
}

function validBaseline(json: unknown, path: string): Baseline {
  try {
    return parseBaseline(json, path);
  } catch (err) {
    if (err instanceof SchemaError) throw new OperationError('BASELINE_INVALID', `invalid baseline: ${err.message}`, { cause: err });
    throw err;
  }
}

/**
 * Measures an EIF (streaming: images are hundreds of MB).
 *
 * @throws EifError for a malformed image; OperationError INPUT_UNREADABLE when the file cannot be read
 */
export async function measureEif(path: string, options: DescribeEifOptions = {}): Promise<EifDescription> {
  try {
    return await describeEif(path, options);
  } catch (err) {
    if (err instanceof EifError) throw err;
    throw unreadable(path, err);
  }
}

/** A build's PCRs, from an EIF or from nitro-cli JSON output. */
export interface ImageMeasurement {
  readonly pcrs: ImagePcrs;
  readonly eifSha384?: string;
  readonly source: BaselineBody['source'];
}

/**
 * PCRs of an EIF or of nitro-cli JSON output, detected by content (the EIF magic).
 *
 * @throws EifError for a malformed image or JSON that is not nitro-cli output; OperationError INPUT_UNREADABLE
 */
export async function measureImage(path: string, options: DescribeEifOptions = {}): Promise<ImageMeasurement> {
  let head: Buffer;
  try {
    const handle = await open(path, 'r');
    head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    await handle.close();
  } catch (err) {
    throw unreadable(path, err);
  }
  if (head.equals(EIF_MAGIC)) {
    const d = await measureEif(path, options);
    return { pcrs: d.pcrs, eifSha384: d.fileSha384, source: 'eif' };
  }
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw new EifError(`${path} is neither an EIF nor JSON`);
  }
  return { pcrs: measurementsFromNitroCli(json), source: 'nitro-cli' };
}

/** An approver's (or CI's) Ed25519 private key. @throws OperationError KEY_UNUSABLE */
export async function loadBaselineKey(path: string): Promise<KeyObject> {
  return privateKey(path);
}

async function privateKey(path: string): Promise<KeyObject> {
  try {
    return await loadPrivateKeyFile(path);
  } catch (err) {
    throw new OperationError('KEY_UNUSABLE', (err as Error).message, { cause: err });
  }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

export interface RecordRequest {
  /** An EIF or nitro-cli JSON output. */
  readonly image: string;
  readonly name: string;
  /** The baselines directory; the baseline is written to DIR/NAME.json. */
  readonly dir: string;
  readonly builder: string;
  readonly gitCommit?: string;
  readonly imageDigest?: string;
  /** Ed25519 private key file (JWK or PEM) to sign the baseline with. */
  readonly signKeyFile?: string;
  /** Replace an existing baseline of that name (baselines are history: off by default). */
  readonly force?: boolean;
  readonly now: Date;
  /** Progress of reading an EIF (bytes read, file size). */
  readonly onProgress?: DescribeEifOptions['onProgress'];
}

/**
 * Measures a build and writes its baseline (atomically), signed when a key is given.
 *
 * @throws EifError (malformed image), SchemaError (invalid field), OperationError (unreadable input, unusable key, existing baseline)
 */
export async function recordBaseline(req: RecordRequest): Promise<{ path: string; baseline: Baseline }> {
  const measured = await measureImage(req.image, req.onProgress ? { onProgress: req.onProgress } : {});
  const body: BaselineBody = {
    formatVersion: 1,
    name: req.name,
    pcrs: measured.pcrs,
    ...(measured.eifSha384 ? { eifSha384: measured.eifSha384 } : {}),
    ...(req.imageDigest ? { imageDigest: req.imageDigest } : {}),
    ...(req.gitCommit ? { gitCommit: req.gitCommit } : {}),
    builder: req.builder,
    createdAt: req.now.toISOString(),
    source: measured.source,
  };
  let baseline: Baseline = parseBaseline({ ...body, approvals: [] }, 'baseline');
  if (req.signKeyFile) baseline = { ...baseline, signature: await signBaseline(baseline, await privateKey(req.signKeyFile)) };
  const path = join(req.dir, `${baseline.name}.json`);
  if (!req.force && (await exists(path))) throw new OperationError('ALREADY_EXISTS', `${path} exists`);
  await mkdir(dirname(path), { recursive: true });
  await writeFileAtomic(path, formatBaseline(baseline), 0o644);
  return { path, baseline };
}

/**
 * Measures a rebuilt image and compares it with a recorded baseline.
 *
 * @throws OperationError (unreadable or invalid baseline or image), EifError (malformed image)
 */
export async function checkRebuild(image: string, baselineFile: string): Promise<{ baseline: Baseline; rebuilt: ImageMeasurement; differ: Array<(typeof IMAGE_PCRS)[number]> }> {
  const baseline = await readBaseline(baselineFile);
  const rebuilt = await measureImage(image);
  return { baseline, rebuilt, differ: differingPcrs(baseline.pcrs, rebuilt.pcrs, IMAGE_PCRS) };
}

/**
 * Adds an approval by the key in `keyFile` to the baseline file (atomically); a
 * second approval by the same key is not added.
 *
 * @throws OperationError (unreadable or invalid baseline, unusable key)
 */
export async function approveBaselineFile(path: string, keyFile: string, now: Date): Promise<{ baseline: Baseline; approval: Approval; added: boolean }> {
  const baseline = await readBaseline(path);
  const approval = await approveBaseline(baseline, await privateKey(keyFile), now);
  if (baseline.approvals.some((a) => a.kid === approval.kid)) return { baseline, approval, added: false };
  const updated: Baseline = { ...baseline, approvals: [...baseline.approvals, approval] };
  await writeFileAtomic(path, formatBaseline(updated), 0o644);
  return { baseline: updated, approval, added: true };
}

/**
 * Creates an Ed25519 key pair for signing or approving baselines: the private
 * JWK at `path` (mode 0600), the public JWK at `path.pub`.
 *
 * @throws OperationError ALREADY_EXISTS: a key is never overwritten
 */
export async function generateBaselineKey(path: string): Promise<{ kid: string }> {
  if (await exists(path)) throw new OperationError('ALREADY_EXISTS', `${path} exists`);
  const { privateKey: key } = generateKeyPairSync('ed25519');
  const pub = createPublicKey(key).export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(pub, 'sha256');
  await mkdir(dirname(path), { recursive: true });
  await writeFileAtomic(path, `${JSON.stringify({ ...key.export({ format: 'jwk' }), kid })}\n`, 0o600);
  await writeFileAtomic(`${path}.pub`, `${JSON.stringify({ ...pub, kid, alg: 'EdDSA', use: 'sig' })}\n`, 0o644);
  return { kid };
}

/**
 * The key at `path`, created first if missing (the development admin key): created exclusively, so
 * concurrent first runs (a broker and an approve starting together) all end up with the one key that
 * landed; the public JWK at `path.pub` is derived from it (rewritten when missing or different).
 *
 * @throws OperationError KEY_UNUSABLE when the file exists but is not an Ed25519 private key
 */
export async function ensureBaselineKey(path: string): Promise<{ kid: string; publicKeyFile: string }> {
  if (!(await exists(path))) {
    const { privateKey: fresh } = generateKeyPairSync('ed25519');
    const kid = await calculateJwkThumbprint(createPublicKey(fresh).export({ format: 'jwk' }) as JWK, 'sha256');
    await mkdir(dirname(path), { recursive: true });
    await createFileExclusive(path, `${JSON.stringify({ ...fresh.export({ format: 'jwk' }), kid })}\n`, 0o600);
  }
  const key = await privateKey(path);
  const pub = createPublicKey(key).export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(pub, 'sha256');
  const text = `${JSON.stringify({ ...pub, kid, alg: 'EdDSA', use: 'sig' })}\n`;
  const publicKeyFile = `${path}.pub`;
  if ((await readFile(publicKeyFile, 'utf8').catch(() => '')) !== text) await writeFileAtomic(publicKeyFile, text, 0o644);
  return { kid, publicKeyFile };
}

/**
 * The allow rule a measurement file gives, detected by content: a keygate
 * baseline (it has `formatVersion`) gives a rule that names it, and the
 * baseline itself, to be copied into the store so brokers can check its
 * approvals; raw nitro-cli output (`{ "Measurements": ... }`) gives a plain
 * PCR rule.
 *
 * @throws OperationError INPUT_UNREADABLE, INPUT_INVALID (not nitro-cli output), BASELINE_INVALID
 */
export async function allowRuleFrom(path: string): Promise<{ rule: AllowRule; baseline?: Baseline }> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw unreadable(path, err);
  }
  // Shape before meaning: anything but a JSON object (null included) is neither a baseline nor nitro-cli output.
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new OperationError('INPUT_INVALID', `${path}: must be a JSON object (a keygate baseline or nitro-cli output)`);
  }
  const json = parsed as Record<string, unknown>;
  if (json.formatVersion !== undefined) {
    const baseline = validBaseline(json, path);
    return { rule: pcrSet(baseline.pcrs, baseline.name), baseline };
  }
  try {
    return { rule: pcrSet(measurementsFromNitroCli(json)) };
  } catch (err) {
    throw new OperationError('INPUT_INVALID', `${path}: ${(err as Error).message}`, { cause: err });
  }
}
