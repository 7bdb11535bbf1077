import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { IMAGE_PCRS, SHA384_HEX, type ImagePcrs } from '../../lib/pcrs.js';
import { ISO_TIME, SchemaError, SECRET_NAME } from './schema.js';

/**
 * A baseline is what CI recorded for one build: its PCRs and provenance.
 * It becomes usable by bindings once enough admins have approved it.
 */
export interface BaselineBody {
  readonly formatVersion: 1;
  readonly name: string;
  readonly pcrs: ImagePcrs;
  /** SHA-384 of the EIF the PCRs were measured from, when recorded from the file. */
  readonly eifSha384?: string;
  readonly imageDigest?: string;
  readonly gitCommit?: string;
  /** Who or what recorded it (CI job, user@host). */
  readonly builder: string;
  readonly createdAt: string;
  readonly source: 'eif' | 'nitro-cli';
}

/** An admin's signature over a baseline's digest. */
export interface Approval {
  /** RFC 7638 thumbprint of the admin's public key. */
  readonly kid: string;
  /** Compact JWS (EdDSA) over { baseline, digest, approvedAt }. */
  readonly jws: string;
}

export interface Baseline extends BaselineBody {
  /** Optional JWS by the recording CI key over the canonical body. */
  readonly signature?: string;
  readonly approvals: readonly Approval[];
}

const BODY_FIELDS = ['formatVersion', 'name', 'pcrs', 'eifSha384', 'imageDigest', 'gitCommit', 'builder', 'createdAt', 'source'] as const;

/** JSON with object keys sorted at every level and no whitespace: the bytes that get signed. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** The signed part of a baseline (no signature, no approvals). */
export function baselineBody(b: BaselineBody): BaselineBody {
  const out: Record<string, unknown> = {};
  for (const k of BODY_FIELDS) if (b[k] !== undefined) out[k] = b[k];
  return out as unknown as BaselineBody;
}

/** Lower-case hex SHA-256 of the canonical body: what approvals sign. */
export function baselineDigest(b: BaselineBody): string {
  return createHash('sha256').update(canonicalJson(baselineBody(b))).digest('hex');
}

/** Pretty JSON with a fixed field order, so baseline files diff readably in review. */
export function formatBaseline(b: Baseline): string {
  const ordered: Record<string, unknown> = {};
  for (const k of BODY_FIELDS) if (b[k] !== undefined) ordered[k] = k === 'pcrs' ? Object.fromEntries(Object.entries(b.pcrs).sort(([x], [y]) => Number(x) - Number(y))) : b[k];
  if (b.signature) ordered.signature = b.signature;
  ordered.approvals = b.approvals;
  return `${JSON.stringify(ordered, null, 2)}\n`;
}

function str(v: unknown, path: string, pattern?: RegExp): string {
  if (typeof v !== 'string' || (pattern && !pattern.test(v))) throw new SchemaError(path, 'is missing or malformed');
  return v;
}

/** Validates a baseline file's content. @throws SchemaError naming the field */
export function parseBaseline(json: unknown, path = 'baseline'): Baseline {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new SchemaError(path, 'must be an object');
  const o = json as Record<string, unknown>;
  for (const k of Object.keys(o)) if (![...BODY_FIELDS, 'signature', 'approvals'].includes(k)) throw new SchemaError(`${path}.${k}`, 'is not a known field');
  if (o.formatVersion !== 1) throw new SchemaError(`${path}.formatVersion`, 'must be 1');
  const pcrsIn = o.pcrs as Record<string, unknown> | undefined;
  if (!pcrsIn || typeof pcrsIn !== 'object') throw new SchemaError(`${path}.pcrs`, 'must be an object');
  for (const k of Object.keys(pcrsIn)) if (!IMAGE_PCRS.map(String).includes(k)) throw new SchemaError(`${path}.pcrs.${k}`, 'only PCR0, 1, 2 and 8 are recorded');
  const pcrs = {
    '0': str(pcrsIn['0'], `${path}.pcrs.0`, SHA384_HEX),
    '1': str(pcrsIn['1'], `${path}.pcrs.1`, SHA384_HEX),
    '2': str(pcrsIn['2'], `${path}.pcrs.2`, SHA384_HEX),
    ...(pcrsIn['8'] === undefined ? {} : { '8': str(pcrsIn['8'], `${path}.pcrs.8`, SHA384_HEX) }),
  };
  const approvals = o.approvals === undefined ? [] : o.approvals;
  if (!Array.isArray(approvals)) throw new SchemaError(`${path}.approvals`, 'must be an array');
  const source = str(o.source, `${path}.source`, /^(eif|nitro-cli)$/) as BaselineBody['source'];
  return {
    formatVersion: 1,
    name: str(o.name, `${path}.name`, SECRET_NAME),
    pcrs,
    ...(o.eifSha384 === undefined ? {} : { eifSha384: str(o.eifSha384, `${path}.eifSha384`, SHA384_HEX) }),
    ...(o.imageDigest === undefined ? {} : { imageDigest: str(o.imageDigest, `${path}.imageDigest`, /^[\w.:/@+-]{1,300}$/) }),
    ...(o.gitCommit === undefined ? {} : { gitCommit: str(o.gitCommit, `${path}.gitCommit`, /^[0-9a-f]{7,64}$/) }),
    builder: str(o.builder, `${path}.builder`, /^.{1,300}$/),
    createdAt: str(o.createdAt, `${path}.createdAt`, ISO_TIME),
    source,
    ...(o.signature === undefined ? {} : { signature: str(o.signature, `${path}.signature`, /^[\w-]+\.[\w-]+\.[\w-]+$/) }),
    approvals: approvals.map((a, i) => {
      const r = a as Record<string, unknown>;
      return { kid: str(r?.kid, `${path}.approvals[${i}].kid`, /^[\w-]{43}$/), jws: str(r?.jws, `${path}.approvals[${i}].jws`, /^[\w-]+\.[\w-]+\.[\w-]+$/) };
    }),
  };
}

/** jose loads on first use: every store (so every CLI command that reads one) imports this module (start-up, issue 15). */
const jose = (): Promise<typeof import('jose')> => import('jose');

async function kidOf(key: KeyObject): Promise<string> {
  const { calculateJwkThumbprint, exportJWK } = await jose();
  return calculateJwkThumbprint(await exportJWK(key.type === 'private' ? createPublicKey(key) : key), 'sha256');
}

/** Signs the canonical body with the recording (CI) key: an Ed25519 JWS. */
export async function signBaseline(b: BaselineBody, key: KeyObject): Promise<string> {
  const { CompactSign } = await jose();
  return new CompactSign(new TextEncoder().encode(canonicalJson(baselineBody(b))))
    .setProtectedHeader({ alg: 'EdDSA', kid: await kidOf(key), typ: 'keygate-baseline+jws' })
    .sign(key);
}

/** True when `signature` is a valid JWS by `key` over exactly this baseline's body. */
export async function verifyBaselineSignature(b: Baseline, key: KeyObject): Promise<boolean> {
  if (!b.signature) return false;
  const { compactVerify } = await jose();
  try {
    const { payload } = await compactVerify(b.signature, key, { algorithms: ['EdDSA'] });
    return new TextDecoder().decode(payload) === canonicalJson(baselineBody(b));
  } catch {
    return false;
  }
}

/** An admin approval of this exact baseline (name and digest). */
export async function approveBaseline(b: Baseline, adminKey: KeyObject, now = new Date()): Promise<Approval> {
  const kid = await kidOf(adminKey);
  const { CompactSign } = await jose();
  const jws = await new CompactSign(new TextEncoder().encode(JSON.stringify({ baseline: b.name, digest: baselineDigest(b), approvedAt: now.toISOString() })))
    .setProtectedHeader({ alg: 'EdDSA', kid, typ: 'keygate-approval+jws' })
    .sign(adminKey);
  return { kid, jws };
}

/**
 * Counts approvals that are valid signatures by distinct keys among
 * `adminKeys` over this baseline's current digest. An approval of an edited
 * baseline, a repeated key or an unknown key counts for nothing.
 */
export async function countApprovals(b: Baseline, adminKeys: readonly KeyObject[]): Promise<number> {
  const digest = baselineDigest(b);
  const { compactVerify } = await jose();
  const byKid = new Map<string, KeyObject>();
  for (const k of adminKeys) byKid.set(await kidOf(k), k);
  const counted = new Set<string>();
  for (const a of b.approvals) {
    const key = byKid.get(a.kid);
    if (!key || counted.has(a.kid)) continue;
    try {
      const { payload } = await compactVerify(a.jws, key, { algorithms: ['EdDSA'] });
      const claims = JSON.parse(new TextDecoder().decode(payload)) as { baseline?: unknown; digest?: unknown };
      if (claims.baseline === b.name && claims.digest === digest) counted.add(a.kid);
    } catch {
      // a bad signature is simply not an approval
    }
  }
  return counted.size;
}
