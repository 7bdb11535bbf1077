import { PCR_HEX } from '../../lib/pcrs.js';
import { createHash } from 'node:crypto';
import { BINDABLE_PCRS, INJECT_METHODS, PROVIDER_NAMES, RELEASE_MODES, REQUIRED_PCRS, type AllowRule, type ApprovalPolicy, type ApproverKey, type Binding, type BindablePcrs, type InjectRule, type InstanceRestriction, type Revocations } from './types.js';

import { CodedError } from '../../lib/coded-error.js';

/** A document that does not match its schema; `path` names the offending field. */
export class SchemaError extends CodedError<'SCHEMA_INVALID'> {
  override readonly name = 'SchemaError';
  constructor(
    readonly path: string,
    message: string,
  ) {
    super('SCHEMA_INVALID', `${path}: ${message}`);
  }
}

export const SECRET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** An EC2 instance id; module_id starts with one (decide.ts reads it from there). */
export const INSTANCE_ID_BODY = 'i-[0-9a-f]{8,32}';
const INSTANCE_ID = new RegExp(`^${INSTANCE_ID_BODY}$`);
/** A stored time: what Date#toISOString writes (UTC, "Z"). */
export const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$/;
const MAX_TTL_SECONDS = 86_400;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function object(value: unknown, path: string, allowed: readonly string[]): Json {
  if (!isObject(value)) throw new SchemaError(path, 'must be an object');
  for (const key of Object.keys(value)) if (!allowed.includes(key)) throw new SchemaError(`${path}.${key}`, 'is not a known field');
  return value;
}

function string(value: unknown, path: string, pattern?: RegExp): string {
  if (typeof value !== 'string') throw new SchemaError(path, 'must be a string');
  if (pattern && !pattern.test(value)) throw new SchemaError(path, `has an invalid format ("${value.slice(0, 80)}")`);
  return value;
}

function integer(value: unknown, path: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new SchemaError(path, `must be an integer in ${min}..${max}`);
  }
  return value;
}

function boolean(value: unknown, path: string): boolean {
  if (typeof value !== 'boolean') throw new SchemaError(path, 'must be true or false');
  return value;
}

function stringArray(value: unknown, path: string, pattern: RegExp): string[] {
  if (!Array.isArray(value)) throw new SchemaError(path, 'must be an array');
  return value.map((v, i) => string(v, `${path}[${i}]`, pattern));
}

/** Validates a PCR set: PCR0/1/2 required, only bindable indexes, lower-case hex of one length. */
export function parsePcrValues(value: unknown, path: string): BindablePcrs {
  const obj = object(value, path, BINDABLE_PCRS.map(String));
  for (const index of REQUIRED_PCRS) if (obj[String(index)] === undefined) throw new SchemaError(`${path}.${index}`, 'is required');
  const out: Record<string, string> = {};
  let length: number | undefined;
  for (const [key, v] of Object.entries(obj)) {
    const hex = string(v, `${path}.${key}`, PCR_HEX);
    if (length !== undefined && hex.length !== length) throw new SchemaError(`${path}.${key}`, 'differs in length from the other PCRs');
    length = hex.length;
    out[key] = hex;
  }
  return out;
}

function parseRule(value: unknown, path: string): AllowRule {
  const obj = object(value, path, ['pcrs', 'baseline']);
  const pcrs = parsePcrValues(obj.pcrs, `${path}.pcrs`);
  return obj.baseline === undefined ? { pcrs } : { pcrs, baseline: string(obj.baseline, `${path}.baseline`, SECRET_NAME) };
}

/** An EC2 tag key (1-128) or value (0-256) as EC2 allows them; no control characters. */
const TAG_KEY = /^[^\p{Cc}]{1,128}$/u;
const TAG_VALUE = /^[^\p{Cc}]{0,256}$/u;

/** `{ ids: [...] }` or `{ ec2Tag: { key, value } }`: exactly one. */
function parseInstances(value: unknown, path: string): InstanceRestriction {
  const obj = object(value, path, ['ids', 'ec2Tag']);
  if ((obj.ids === undefined) === (obj.ec2Tag === undefined)) throw new SchemaError(path, 'must have exactly one of "ids" or "ec2Tag"');
  if (obj.ids !== undefined) return { ids: stringArray(obj.ids, `${path}.ids`, INSTANCE_ID) };
  const tag = object(obj.ec2Tag, `${path}.ec2Tag`, ['key', 'value']);
  return { ec2Tag: { key: string(tag.key, `${path}.ec2Tag.key`, TAG_KEY), value: string(tag.value, `${path}.ec2Tag.value`, TAG_VALUE) } };
}

/**
 * Validates a binding document read from the store or built by the CLI.
 *
 * @throws SchemaError naming the first offending field
 */
export function parseBinding(value: unknown, path = 'binding'): Binding {
  const obj = object(value, path, [
    'secret', 'version', 'provider', 'kmsKeyId', 'mode', 'ciphertext', 'text', 'allow', 'instances',
    'allowDebug', 'ttlSeconds', 'revoked', 'approval', 'createdAt', 'updatedAt', 'inject',
  ]);
  const provider = string(obj.provider, `${path}.provider`, new RegExp(`^(${PROVIDER_NAMES.join('|')})$`)) as Binding['provider'];
  if (!Array.isArray(obj.allow) || obj.allow.length === 0) throw new SchemaError(`${path}.allow`, 'must be a non-empty array');
  const binding: Binding = {
    secret: string(obj.secret, `${path}.secret`, SECRET_NAME),
    version: integer(obj.version, `${path}.version`, 1, Number.MAX_SAFE_INTEGER),
    provider,
    ...(obj.kmsKeyId === undefined ? {} : { kmsKeyId: string(obj.kmsKeyId, `${path}.kmsKeyId`, /^[\w:/+=,.@-]{1,2048}$/) }),
    ...(obj.mode === undefined ? {} : { mode: string(obj.mode, `${path}.mode`, new RegExp(`^(${RELEASE_MODES.join('|')})$`)) as Binding['mode'] }),
    ciphertext: string(obj.ciphertext, `${path}.ciphertext`, /^[A-Za-z0-9+/]+={0,2}$/),
    text: boolean(obj.text, `${path}.text`),
    allow: obj.allow.map((rule, i) => parseRule(rule, `${path}.allow[${i}]`)),
    ...(obj.instances === undefined ? {} : { instances: parseInstances(obj.instances, `${path}.instances`) }),
    allowDebug: boolean(obj.allowDebug, `${path}.allowDebug`),
    ttlSeconds: integer(obj.ttlSeconds, `${path}.ttlSeconds`, 1, MAX_TTL_SECONDS),
    ...(obj.inject === undefined ? {} : { inject: parseInject(obj.inject, `${path}.inject`) }),
    revoked: boolean(obj.revoked, `${path}.revoked`),
    ...(obj.approval === undefined ? {} : { approval: parseApprovalPolicy(obj.approval, `${path}.approval`) }),
    createdAt: string(obj.createdAt, `${path}.createdAt`, ISO_TIME),
    updatedAt: string(obj.updatedAt, `${path}.updatedAt`, ISO_TIME),
  };
  if (provider === 'aws-kms' && !binding.kmsKeyId) throw new SchemaError(`${path}.kmsKeyId`, 'is required for the aws-kms provider');
  // Only KMS can encrypt to an attested key: a local-provider value is always decrypted by the broker.
  if (binding.mode === 'kms-recipient' && provider !== 'aws-kms') throw new SchemaError(`${path}.mode`, 'kms-recipient needs the aws-kms provider');
  // The broker adds an injected credential itself: a value only the enclave could decrypt is of no use to it.
  if (binding.inject && binding.mode === 'kms-recipient') throw new SchemaError(`${path}.inject`, 'cannot be combined with mode kms-recipient (the broker must hold the value to add it)');
  // Gateway tokens are not gated by human approval (yet): refuse the pair rather than let a token skip the approvers.
  if (binding.inject && binding.approval) throw new SchemaError(`${path}.inject`, 'cannot be combined with approval (gateway calls are not gated by human approval)');
  return binding;
}

/**
 * An inject route: "METHOD /path" (exact) or "METHOD /prefix*" (every path starting with /prefix). Paths are
 * kept to RFC 3986 path characters with no dot segments and no empty segments, so that what the allow-list
 * names is what the upstream serves.
 */
export const INJECT_ROUTE = new RegExp(`^(${INJECT_METHODS.join('|')}) (/[A-Za-z0-9._~!$&'()+,;=:@%/-]{0,511})(\\*?)$`);
/**
 * A path segment that an upstream could resolve to another path: a segment of dots only (`..`, and `...`,
 * which Windows servers trim to `..`), also with path parameters (`..;x`, which Tomcat and Spring resolve
 * as `..`), an empty segment, an encoded slash or backslash, or one of those encoded twice (`%252e`, for an
 * upstream behind a proxy that decodes once more).
 */
const UNSAFE_SEGMENT = /(^|\/)(\.|%2e)+((;|%3b)[^/]*)?(\/|$)|\/\/|%2f|%5c|%25(2e|2f|5c)/i;
/** Header names the broker never lets a binding set (framing, routing, hop-by-hop). */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-connection', 'expect']);
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$/;
/** Printable ASCII (no CR/LF), with exactly one `{value}`. */
const TEMPLATE = /^[\x20-\x7e]{0,256}$/;
export const MAX_INJECT_BODY_BYTES = 16 * 1024 * 1024;

/** An inject route is well-formed (see INJECT_ROUTE) and names no path an upstream could resolve elsewhere. */
export function isInjectRoute(route: string): boolean {
  const m = INJECT_ROUTE.exec(route);
  return m !== null && !UNSAFE_SEGMENT.test(m[2]!);
}

/** Validates an `inject` section (see InjectRule). */
export function parseInject(value: unknown, path = 'inject'): InjectRule {
  const obj = object(value, path, ['upstream', 'header', 'template', 'routes', 'maxBodyBytes', 'budget', 'allowStatus']);
  const upstream = string(obj.upstream, `${path}.upstream`);
  let url: URL | undefined;
  try {
    url = new URL(upstream);
  } catch {
    url = undefined;
  }
  if (!url || url.protocol !== 'https:' || url.username || url.password || url.search || url.hash || url.pathname !== '/' || url.origin !== upstream.replace(/\/$/, '')) {
    throw new SchemaError(`${path}.upstream`, 'must be an https origin such as "https://api.openai.com" (no path, query or credentials)');
  }
  const header = string(obj.header, `${path}.header`, HEADER_NAME);
  if (RESERVED_HEADERS.has(header)) throw new SchemaError(`${path}.header`, `"${header}" is reserved for HTTP framing`);
  const template = string(obj.template, `${path}.template`, TEMPLATE);
  if (template.split('{value}').length !== 2) throw new SchemaError(`${path}.template`, 'must contain {value} exactly once');
  if (!Array.isArray(obj.routes) || obj.routes.length === 0 || obj.routes.length > 64) throw new SchemaError(`${path}.routes`, 'must be an array of 1..64 routes');
  const routes = obj.routes.map((r, i) => {
    const route = string(r, `${path}.routes[${i}]`);
    if (!isInjectRoute(route)) throw new SchemaError(`${path}.routes[${i}]`, `must be "METHOD /path" or "METHOD /prefix*" (${INJECT_METHODS.join(', ')}; no dot or empty segments), got "${route.slice(0, 80)}"`);
    return route;
  });
  const budget = object(obj.budget, `${path}.budget`, ['requests', 'windowSeconds']);
  let allowStatus: number[] | undefined;
  if (obj.allowStatus !== undefined) {
    if (!Array.isArray(obj.allowStatus) || obj.allowStatus.length === 0) throw new SchemaError(`${path}.allowStatus`, 'must be a non-empty array of HTTP status codes');
    allowStatus = obj.allowStatus.map((c, i) => integer(c, `${path}.allowStatus[${i}]`, 100, 599));
    if (new Set(allowStatus).size !== allowStatus.length) throw new SchemaError(`${path}.allowStatus`, 'must not repeat a status');
  }
  return {
    upstream: url.origin,
    header,
    template,
    routes,
    maxBodyBytes: integer(obj.maxBodyBytes, `${path}.maxBodyBytes`, 0, MAX_INJECT_BODY_BYTES),
    budget: { requests: integer(budget.requests, `${path}.budget.requests`, 1, 1_000_000_000), windowSeconds: integer(budget.windowSeconds, `${path}.budget.windowSeconds`, 1, 86_400) },
    ...(allowStatus ? { allowStatus } : {}),
  };
}

/** Validates the revocation list. */
export function parseRevocations(value: unknown, path = 'revocations'): Revocations {
  const obj = object(value, path, ['pcr0', 'instances', 'baselines']);
  return {
    pcr0: obj.pcr0 === undefined ? [] : stringArray(obj.pcr0, `${path}.pcr0`, PCR_HEX),
    instances: obj.instances === undefined ? [] : stringArray(obj.instances, `${path}.instances`, INSTANCE_ID),
    baselines: obj.baselines === undefined ? [] : stringArray(obj.baselines, `${path}.baselines`, SECRET_NAME),
  };
}

/** Bounds of an approval policy: approvers per binding, and the window (1 minute .. 7 days). */
export const MAX_APPROVERS = 16;
export const MIN_APPROVAL_WINDOW_SECONDS = 60;
export const MAX_APPROVAL_WINDOW_SECONDS = 7 * 86_400;
const B64URL_32 = /^[A-Za-z0-9_-]{43}$/;

/** RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 public JWK: the canonical member order is crv, kty, x. */
export function ed25519Thumbprint(x: string): string {
  return createHash('sha256').update(JSON.stringify({ crv: 'Ed25519', kty: 'OKP', x })).digest('base64url');
}

function parseApprover(value: unknown, path: string): ApproverKey {
  const obj = object(value, path, ['kid', 'jwk']);
  const jwk = object(obj.jwk, `${path}.jwk`, ['kty', 'crv', 'x']);
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519') throw new SchemaError(`${path}.jwk`, 'must be an Ed25519 public key (kty OKP, crv Ed25519)');
  const x = string(jwk.x, `${path}.jwk.x`, B64URL_32);
  // 43 characters carry 2 spare bits: only the canonical spelling is accepted, else one key could sit under two kids and count twice.
  if (Buffer.from(x, 'base64url').toString('base64url') !== x) throw new SchemaError(`${path}.jwk.x`, 'must be the canonical base64url of a 32-byte key');
  const kid = string(obj.kid, `${path}.kid`, B64URL_32);
  // The kid is what grants and the audit name: it must be the key's own thumbprint, never a label.
  if (kid !== ed25519Thumbprint(x)) throw new SchemaError(`${path}.kid`, 'is not the RFC 7638 thumbprint of jwk');
  return { kid, jwk: { kty: 'OKP', crv: 'Ed25519', x } };
}

/**
 * Validates an approval policy: 1 <= required <= approvers (1..16 distinct keys), window 60 s .. 7 days.
 *
 * @throws SchemaError naming the first offending field
 */
export function parseApprovalPolicy(value: unknown, path = 'approval'): ApprovalPolicy {
  const obj = object(value, path, ['required', 'approvers', 'windowSeconds']);
  if (!Array.isArray(obj.approvers) || obj.approvers.length === 0 || obj.approvers.length > MAX_APPROVERS) {
    throw new SchemaError(`${path}.approvers`, `must be an array of 1..${MAX_APPROVERS} keys`);
  }
  const approvers = obj.approvers.map((a, i) => parseApprover(a, `${path}.approvers[${i}]`));
  if (new Set(approvers.map((a) => a.kid)).size !== approvers.length) throw new SchemaError(`${path}.approvers`, 'must be distinct keys');
  return {
    required: integer(obj.required, `${path}.required`, 1, approvers.length),
    approvers,
    windowSeconds: integer(obj.windowSeconds, `${path}.windowSeconds`, MIN_APPROVAL_WINDOW_SECONDS, MAX_APPROVAL_WINDOW_SECONDS),
  };
}
