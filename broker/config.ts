import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import { CodedError } from '../lib/coded-error.js';
import { DEFAULT_RATE_LIMITS, type RateLimitSettings } from './rate-limit.js';
import type { AwsKmsSettings } from './kms/aws-kms.js';
import { DEFAULT_AUDIT_MAX_FILE_BYTES } from './audit/log.js';
import { parseHostPort, type HostPort } from '../lib/host-port.js';
import type { DynamoDbStoreSettings, StoreLocation } from './store/open-store.js';
import type { NonceRegistrySettings } from './nonce/registry.js';
import type { QuarantineSettings } from './quarantine/store.js';
import type { SharedKeySettings } from './keys/key-source.js';
import type { AuditSettings } from './audit/settings.js';
import { CHAIN_ID } from './audit/chain.js';
import type { Ec2Settings } from './ec2/instance-tags.js';
import { DEFAULT_DELEGATION_SETTINGS, type DelegationSettings } from './delegation/settings.js';
import { LOG_THRESHOLDS, isLogThreshold, type LogThreshold } from './log.js';
import { gatewaySettingsProblem, type GatewaySettings } from './gateway/settings.js';

/** Broker settings (a JSON config file, overridden by command-line flags). */
export interface BrokerConfig {
  /** HOST:PORT. Plain HTTP is allowed only on loopback; anything else needs `tls`. */
  readonly listen: string;
  /**
   * Bindings store: a directory (the file store, one broker), or `{ kind: "dynamodb", table, ... }` shared by
   * several brokers. `{ kind: "file", dir }` is accepted in a config file and resolved to the directory.
   */
  readonly store: StoreLocation;
  /** Keys and other broker state (signing key, local provider key, challenge key). */
  readonly stateDir: string;
  /** Where the audit records go: the hash-chained file (`file`, default; one broker) or one chain per replica in a DynamoDB table. */
  readonly audit: AuditSettings;
  /** Audit log file (kind `file`). Default `<stateDir>/audit.jsonl`. */
  readonly auditFile?: string;
  /** Size at which the audit file is rotated into `<name>.NNNNNN.jsonl` (the chain continues across files). */
  readonly auditMaxFileBytes: number;
  /** PEM files of trusted roots. Default: the bundled AWS Nitro root G1 only. */
  readonly roots?: readonly string[];
  /** Roots given as PEM text (tests, embedding). Logged loudly: they are not AWS's. */
  readonly extraRootPems?: readonly string[];
  /** Let bindings with allowDebug release to debug enclaves. Default false: debug documents fail verification. */
  readonly allowDebug: boolean;
  /** 32+ byte key shared by all replicas for challenge nonces. Default `<stateDir>/challenge.key`. */
  readonly challengeKeyFile?: string;
  /** Where used challenge nonces are remembered: `memory` (default; single use per broker) or a DynamoDB table shared by every replica. */
  readonly nonces: NonceRegistrySettings;
  /** Where quarantine state lives: `memory` (default; each broker quarantines on its own) or a DynamoDB table shared by every replica. */
  readonly quarantine: QuarantineSettings;
  /** Where the keys every replica shares (signing key, challenge key) live: `file` (default; under stateDir) or a DynamoDB table, encrypted under a KMS key. */
  readonly keys: SharedKeySettings;
  readonly secretCacheTtlSeconds: number;
  readonly maxBodyBytes: number;
  readonly maxDocumentAgeSeconds: number;
  readonly kms?: AwsKmsSettings;
  /** How instance tags are looked up for bindings restricted by `instances.ec2Tag` (cache TTL, region, endpoint, timeout). */
  readonly ec2?: Ec2Settings;
  readonly tls?: { readonly cert: string; readonly key: string };
  readonly rateLimits: RateLimitSettings;
  /** Public keys (JWK or PEM files) of the admins who approve baselines. */
  readonly adminKeys?: readonly string[];
  /** Approvals from distinct admin keys a baseline needs before bindings may use it (k of n). Default 1. */
  readonly approvalsRequired: number;
  /** Admin HTTP API (`/v1/admin/...`): public keys (Ed25519 or P-256; JWK or PEM files) whose JWTs it accepts. Unset: no admin API. Separate from `adminKeys`. */
  readonly adminApiKeys?: readonly string[];
  /** HOST:PORT of the admin API's own listener (same TLS rules as `listen`). Default 127.0.0.1:8444. */
  readonly adminListen: string;
  /** The `aud` admin tokens must carry. Default "keygate-admin". */
  readonly adminAudience: string;
  /** A client must send a request's headers within this time, or it gets 408 and is closed. Default 10. */
  readonly headersTimeoutSeconds: number;
  /** A client must send a whole request (headers and body) within this time. Default 30. */
  readonly requestTimeoutSeconds: number;
  /** An idle keep-alive connection is closed after this time. Default 5. */
  readonly keepAliveTimeoutSeconds: number;
  /** Open client connections at most; further ones are closed on accept. Default 1024. */
  readonly maxConnections: number;
  /** Label the releases metric with secret names. Default false: /metrics is unauthenticated and names reveal which secrets exist. */
  readonly metricsSecretLabels: boolean;
  /** Lowest log level written: debug, info (default), warn, error or silent. The KEYGATE_LOG_LEVEL environment variable overrides it. */
  readonly logLevel: LogThreshold;
  /** Development mode: marked loudly in logs. Only from the --dev flag, never from a config file. */
  readonly dev: boolean;
  /** Limits on delegations: `{ maxTtlSeconds: 3600, maxDepth: 2, maxUses: 1000 }` by default. */
  readonly delegation: DelegationSettings;
  /** Credential substitution (inject bindings): the gateway's own TLS listener and limits. Absent: no gateway. */
  readonly gateway?: GatewaySettings;
  /**
   * Attestation signature checks (P-384 ECDSA, ~60 % of a release's CPU) run on libuv's thread pool, at most this
   * many at once (a check finding them all busy runs on the event loop), so one broker process uses more than one
   * core; 0: all on the event loop. At most UV_THREADPOOL_SIZE - 1 (default pool: 4 threads), leaving a thread for
   * the audit's file I/O. Same checks, verdicts and error codes either way. Default: {@link defaultVerifyThreads}.
   */
  readonly verifyThreads: number;
}

export const DEFAULT_CONFIG: BrokerConfig = {
  listen: '127.0.0.1:8443',
  store: './keygate-store',
  stateDir: './keygate-state',
  allowDebug: false,
  secretCacheTtlSeconds: 60,
  maxBodyBytes: 64 * 1024,
  maxDocumentAgeSeconds: 300,
  auditMaxFileBytes: DEFAULT_AUDIT_MAX_FILE_BYTES,
  rateLimits: DEFAULT_RATE_LIMITS,
  approvalsRequired: 1,
  adminListen: '127.0.0.1:8444',
  adminAudience: 'keygate-admin',
  headersTimeoutSeconds: 10,
  requestTimeoutSeconds: 30,
  keepAliveTimeoutSeconds: 5,
  maxConnections: 1024,
  metricsSecretLabels: false,
  logLevel: 'info',
  nonces: { kind: 'memory' },
  quarantine: { kind: 'memory' },
  keys: { kind: 'file' },
  audit: { kind: 'file' },
  dev: false,
  delegation: DEFAULT_DELEGATION_SETTINGS,
  verifyThreads: defaultVerifyThreads(),
};

/** Defaults for `--dev`: everything under ./.keygate-dev. */
export const DEV_CONFIG: Partial<BrokerConfig> = { store: './.keygate-dev/store', stateDir: './.keygate-dev/state', dev: true };

/** A config file that cannot be used. */
export class ConfigError extends CodedError<'CONFIG_INVALID'> {
  override readonly name = 'ConfigError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('CONFIG_INVALID', message, options);
  }
}

const KEYS = new Set(Object.keys(DEFAULT_CONFIG).concat(['auditFile', 'roots', 'extraRootPems', 'challengeKeyFile', 'kms', 'tls', 'adminKeys', 'ec2', 'adminApiKeys', 'gateway']));

/** Parses `host:port` / `[v6]:port`. */
export function parseListen(listen: string): HostPort {
  const parsed = parseHostPort(listen);
  if (!parsed) throw new ConfigError(`listen "${listen}" must be HOST:PORT`);
  return parsed;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Reads a JSON config file; relative paths in it are taken relative to the file. */
export async function loadConfigFile(path: string): Promise<Partial<BrokerConfig>> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new ConfigError(`cannot read config ${path}: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError(`${path}: must be a JSON object`);
  for (const key of Object.keys(json)) if (!KEYS.has(key)) throw new ConfigError(`${path}: unknown setting "${key}"`);
  // Development mode trusts the NSM simulator's root: only an explicit --dev on the command line may turn it on.
  if ('dev' in json) throw new ConfigError(`${path}: setting "dev" is not allowed in a config file; development mode is only enabled by the --dev flag`);
  const base = dirname(resolve(path));
  const rel = (p: unknown): unknown => (typeof p === 'string' && !isAbsolute(p) ? resolve(base, p) : p);
  const c = json as Record<string, unknown>;
  for (const k of ['store', 'stateDir', 'auditFile', 'challengeKeyFile']) if (k in c) c[k] = rel(c[k]);
  if (c.store && typeof c.store === 'object' && 'dir' in c.store) c.store = { ...c.store, dir: rel((c.store as { dir: unknown }).dir) };
  if (Array.isArray(c.roots)) c.roots = c.roots.map(rel);
  if (Array.isArray(c.adminKeys)) c.adminKeys = c.adminKeys.map(rel);
  if (Array.isArray(c.adminApiKeys)) c.adminApiKeys = c.adminApiKeys.map(rel);
  // Keys stay out of config files: the DynamoDB nonce registry takes credentials from the AWS SDK's chain.
  if (c.nonces && typeof c.nonces === 'object' && 'credentials' in c.nonces) throw new ConfigError(`${path}: nonces.credentials is not allowed in a config file; use the AWS SDK credential chain (environment, profile, instance role)`);
  if (c.quarantine && typeof c.quarantine === 'object' && 'credentials' in c.quarantine) throw new ConfigError(`${path}: quarantine.credentials is not allowed in a config file; use the AWS SDK credential chain (environment, profile, instance role)`);
  if (c.keys && typeof c.keys === 'object' && 'credentials' in c.keys) throw new ConfigError(`${path}: keys.credentials is not allowed in a config file; use the AWS SDK credential chain (environment, profile, instance role)`);
  if (c.audit && typeof c.audit === 'object' && 'credentials' in c.audit) throw new ConfigError(`${path}: audit.credentials is not allowed in a config file; use the AWS SDK credential chain (environment, profile, instance role)`);
  const archive = c.audit && typeof c.audit === 'object' ? (c.audit as { archive?: unknown }).archive : undefined;
  if (archive && typeof archive === 'object' && 'credentials' in archive) throw new ConfigError(`${path}: audit.archive.credentials is not allowed in a config file; use the AWS SDK credential chain (environment, profile, instance role)`);
  if (c.ec2 && typeof c.ec2 === 'object' && 'credentials' in c.ec2) throw new ConfigError(`${path}: ec2.credentials is not allowed in a config file; use the AWS SDK credential chain (environment, profile, instance role)`);
  if (c.gateway && typeof c.gateway === 'object') {
    const g = c.gateway as Record<string, unknown>;
    if (g.budgets && typeof g.budgets === 'object' && 'credentials' in g.budgets) throw new ConfigError(`${path}: gateway.budgets.credentials is not allowed in a config file; use the AWS SDK credential chain (environment, profile, instance role)`);
    c.gateway = { ...g, ...Object.fromEntries(['certFile', 'keyFile', 'upstreamCaFile'].filter((k) => k in g).map((k) => [k, rel(g[k])])) };
  }
  if (c.tls && typeof c.tls === 'object') c.tls = { cert: rel((c.tls as { cert: unknown }).cert), key: rel((c.tls as { key: unknown }).key) };
  return c as Partial<BrokerConfig>;
}

const TABLE_NAME = /^[A-Za-z0-9_.-]{3,255}$/;

/** Checks the `store` setting: a directory, `{ kind: "file", dir }` (returned as the directory) or a DynamoDB table. */
function parseStoreSetting(value: unknown): StoreLocation {
  if (typeof value === 'string') {
    if (value === '') throw new ConfigError('store must not be empty');
    return value;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError('store must be a directory or an object with "kind": "file" or "dynamodb"');
  const s = value as Record<string, unknown>;
  const only = (keys: readonly string[]): void => {
    for (const k of Object.keys(s)) if (!keys.includes(k)) throw new ConfigError(`store: unknown setting "${k}" for kind "${String(s.kind)}" (allowed: ${keys.join(', ')})`);
  };
  if (s.kind === 'file') {
    only(['kind', 'dir']);
    if (typeof s.dir !== 'string' || s.dir === '') throw new ConfigError('store.dir must be a directory (kind "file")');
    return s.dir;
  }
  if (s.kind !== 'dynamodb') throw new ConfigError(`store.kind must be "file" or "dynamodb"${s.kind === undefined ? '' : `, not ${JSON.stringify(s.kind)}`}`);
  only(['kind', 'table', 'region', 'endpoint', 'consistency']);
  if (typeof s.table !== 'string' || !TABLE_NAME.test(s.table)) throw new ConfigError('store.table must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)');
  if (s.region !== undefined && (typeof s.region !== 'string' || !/^[a-z0-9-]{1,64}$/.test(s.region))) throw new ConfigError('store.region must be an AWS region name, e.g. "eu-west-1"');
  if (s.endpoint !== undefined) {
    let url: URL | undefined;
    try {
      url = typeof s.endpoint === 'string' ? new URL(s.endpoint) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) throw new ConfigError('store.endpoint must be an http(s) URL');
  }
  let consistency: DynamoDbStoreSettings['consistency'];
  if (s.consistency !== undefined) {
    const c = s.consistency as Record<string, unknown>;
    if (typeof c !== 'object' || c === null || Array.isArray(c) || Object.keys(c).some((k) => k !== 'maxStalenessMs')) {
      throw new ConfigError('store.consistency must be an object with only "maxStalenessMs"');
    }
    const ms = c.maxStalenessMs;
    if (ms !== undefined && (typeof ms !== 'number' || !Number.isInteger(ms) || ms < 0 || ms > 60_000)) {
      throw new ConfigError('store.consistency.maxStalenessMs must be an integer number of milliseconds in 0..60000 (0: a consistent read on every request)');
    }
    consistency = ms === undefined ? {} : { maxStalenessMs: ms };
  }
  return {
    kind: 'dynamodb',
    table: s.table,
    ...(s.region === undefined ? {} : { region: s.region as string }),
    ...(s.endpoint === undefined ? {} : { endpoint: s.endpoint as string }),
    ...(consistency ? { consistency } : {}),
  };
}

/** Merges layers over the defaults and checks the result. */
export function resolveConfig(...layers: Array<Partial<BrokerConfig>>): BrokerConfig {
  const merged = Object.assign({}, DEFAULT_CONFIG, ...layers) as BrokerConfig;
  const config: BrokerConfig = { ...merged, store: parseStoreSetting(merged.store), rateLimits: { ...DEFAULT_RATE_LIMITS, ...merged.rateLimits }, delegation: validateDelegation(merged.delegation) };
  const { host } = parseListen(config.listen);
  if (!config.tls && !isLoopback(host)) throw new ConfigError(`plain HTTP is only allowed on loopback; give tls.cert and tls.key to listen on ${host}`);
  const admin = parseListen(config.adminListen);
  if (!config.tls && !isLoopback(admin.host)) throw new ConfigError(`plain HTTP is only allowed on loopback; give tls.cert and tls.key for adminListen on ${admin.host}`);
  if (config.adminApiKeys !== undefined && (!Array.isArray(config.adminApiKeys) || config.adminApiKeys.some((k) => typeof k !== 'string' || k === ''))) throw new ConfigError('adminApiKeys must be a list of public key files');
  if (typeof config.adminAudience !== 'string' || !/^[\x21-\x7e]{1,200}$/.test(config.adminAudience)) throw new ConfigError('adminAudience must be 1-200 printable characters without spaces');
  for (const [key, value] of Object.entries({
    secretCacheTtlSeconds: config.secretCacheTtlSeconds,
    maxBodyBytes: config.maxBodyBytes,
    maxDocumentAgeSeconds: config.maxDocumentAgeSeconds,
  })) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) throw new ConfigError(`${key} must be a non-negative number`);
  }
  if (config.maxDocumentAgeSeconds === 0 || config.maxDocumentAgeSeconds > 3600) throw new ConfigError('maxDocumentAgeSeconds must be 1..3600');
  // The live audit file is read whole when the broker starts: keep it well inside what one string can hold.
  if (!Number.isInteger(config.auditMaxFileBytes) || config.auditMaxFileBytes < 4096 || config.auditMaxFileBytes > 256 * 1024 * 1024) {
    throw new ConfigError('auditMaxFileBytes must be an integer in 4096..268435456 (256 MiB)');
  }
  for (const [key, value] of Object.entries({
    headersTimeoutSeconds: config.headersTimeoutSeconds,
    requestTimeoutSeconds: config.requestTimeoutSeconds,
    keepAliveTimeoutSeconds: config.keepAliveTimeoutSeconds,
  })) {
    // 0 would mean "no timeout" to node:http: exactly what these settings exist to prevent.
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > 3600) throw new ConfigError(`${key} must be a number of seconds in (0, 3600]`);
  }
  if (config.headersTimeoutSeconds > config.requestTimeoutSeconds) throw new ConfigError('headersTimeoutSeconds must not exceed requestTimeoutSeconds');
  if (!Number.isInteger(config.maxConnections) || config.maxConnections < 1) throw new ConfigError('maxConnections must be a positive integer');
  if (typeof config.metricsSecretLabels !== 'boolean') throw new ConfigError('metricsSecretLabels must be true or false');
  if (!isLogThreshold(config.logLevel)) throw new ConfigError(`logLevel must be one of ${LOG_THRESHOLDS.join(', ')}`);
  if (!Number.isInteger(config.approvalsRequired) || config.approvalsRequired < 1) throw new ConfigError('approvalsRequired must be a positive integer');
  if (config.adminKeys && config.approvalsRequired > config.adminKeys.length) {
    throw new ConfigError(`approvalsRequired (${config.approvalsRequired}) exceeds the number of adminKeys (${config.adminKeys.length})`);
  }
  if (config.ec2 !== undefined) validateEc2(config.ec2);
  validateNonces(config.nonces);
  validateQuarantine(config.quarantine);
  validateKeys(config.keys);
  validateAudit(config.audit);
  // Shape only: the pool size is the broker process's (checked where a broker starts, assertThreadPoolFits), and an
  // admin command reading the same file from another shell must not be refused for it.
  const verifyThreads = verifyThreadsProblem(config.verifyThreads);
  if (verifyThreads) throw new ConfigError(`verifyThreads ${verifyThreads}`);
  const gatewayProblem = config.gateway === undefined ? undefined : gatewaySettingsProblem(config.gateway);
  if (gatewayProblem) throw new ConfigError(gatewayProblem);
  return config;
}

/**
 * libuv's thread-pool size in this process: UV_THREADPOOL_SIZE as libuv 1.46 reads it when the pool starts (unset: 4;
 * else atoi, 0 or unreadable: 1, negative wraps to the maximum, at most 1024).
 */
export function threadPoolSize(env: NodeJS.ProcessEnv = process.env): number {
  const value = env.UV_THREADPOOL_SIZE;
  if (value === undefined) return 4;
  const n = Number.parseInt(value, 10) || 0;
  if (n === 0) return 1;
  return n < 0 ? 1024 : Math.min(1024, n);
}

/**
 * The default `verifyThreads`: one fewer than the cores this process may use (the event loop is the other), and
 * below the thread pool's size (a thread kept for file I/O): 1 on 2 cores, 3 with libuv's default pool on 4 or
 * more, 0 on one core (nothing to gain there, only the hand-off).
 */
export function defaultVerifyThreads(cores: number = availableParallelism(), poolSize: number = threadPoolSize()): number {
  return Math.max(0, Math.min(cores - 1, poolSize - 1));
}

/**
 * What is wrong with `verifyThreads` (0: off; N: at most N signature checks on libuv's pool at once), or undefined.
 * Given `poolSize` (the broker process's, {@link threadPoolSize}), N must also leave one pool thread free, so an
 * audit write or fdatasync never waits behind a queue of verifies; the pool's size is fixed when the process starts,
 * by UV_THREADPOOL_SIZE in its environment. Without it, only the shape is checked (what any command reading the
 * config may check).
 */
export function verifyThreadsProblem(value: unknown, poolSize?: number): string | undefined {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 64) return 'must be an integer in 0..64 (0: signatures checked on the event loop)';
  if (poolSize !== undefined && value >= poolSize) return `${value} needs a thread pool of at least ${value + 1} threads (one kept for file I/O), but it has ${poolSize}: start the broker with UV_THREADPOOL_SIZE=${value + 1} or more in its environment`;
  return undefined;
}

/**
 * Refuses `verifyThreads` that this process's thread pool cannot hold (CONFIG_INVALID): where a broker starts
 * (createBroker) and where `keygate broker` checks its config before forking workers or printing --check-config.
 */
export function assertThreadPoolFits(verifyThreads: number): void {
  const problem = verifyThreadsProblem(verifyThreads, threadPoolSize());
  if (problem) throw new ConfigError(`verifyThreads ${problem}`);
}

/** The `delegation` setting: any of its keys, each an integer in its range; the rest from the defaults. */
function validateDelegation(value: unknown): DelegationSettings {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError('delegation must be an object: {"maxTtlSeconds": 3600, "maxDepth": 2, "maxUses": 1000}');
  const o = value as Record<string, unknown>;
  const limits = { maxTtlSeconds: [1, 86_400], maxDepth: [1, 8], maxUses: [1, 1_000_000] } as const;
  for (const key of Object.keys(o)) {
    if (!Object.hasOwn(limits, key)) throw new ConfigError(`delegation: unknown setting "${key}"`);
    const [min, max] = limits[key as keyof typeof limits];
    if (!Number.isInteger(o[key]) || (o[key] as number) < min || (o[key] as number) > max) throw new ConfigError(`delegation.${key} must be an integer in ${min}..${max}`);
  }
  return { ...DEFAULT_DELEGATION_SETTINGS, ...(o as Partial<DelegationSettings>) };
}

const QUARANTINE_KINDS: Record<string, ReadonlySet<string>> = {
  memory: new Set(['kind']),
  dynamodb: new Set(['kind', 'table', 'region', 'endpoint', 'credentials', 'maxAttempts', 'requestTimeoutMs']),
};

const SHARED_KEY_KINDS: Record<string, ReadonlySet<string>> = {
  file: new Set(['kind']),
  dynamodb: new Set(['kind', 'table', 'kmsKeyId', 'region', 'endpoint', 'credentials', 'requestTimeoutMs']),
};

const NONCE_KINDS: Record<string, ReadonlySet<string>> = {
  memory: new Set(['kind', 'maxRemembered']),
  dynamodb: new Set(['kind', 'table', 'region', 'endpoint', 'credentials', 'maxAttempts', 'requestTimeoutMs']),
};

function validateQuarantine(quarantine: unknown): asserts quarantine is QuarantineSettings {
  validateKindSetting('quarantine', quarantine, QUARANTINE_KINDS, '{"kind": "memory"} or {"kind": "dynamodb", "table": ...}');
}

function validateKeys(keys: unknown): asserts keys is SharedKeySettings {
  const k = validateKindSetting('keys', keys, SHARED_KEY_KINDS, '{"kind": "file"} or {"kind": "dynamodb", "table": ..., "kmsKeyId": ...}');
  // A key id, key ARN, alias name or alias ARN: KMS checks it; here only that one is given.
  if (k.kind === 'dynamodb' && (typeof k.kmsKeyId !== 'string' || k.kmsKeyId.length === 0 || k.kmsKeyId.length > 2048 || /\s/.test(k.kmsKeyId))) {
    throw new ConfigError('keys.kmsKeyId must be a KMS key id, key ARN or alias (e.g. "alias/keygate")');
  }
}

const AUDIT_KINDS: Record<string, ReadonlySet<string>> = {
  file: new Set(['kind']),
  dynamodb: new Set(['kind', 'table', 'replicaId', 'maxBatchItems', 'archive', 'region', 'endpoint', 'credentials', 'maxAttempts', 'requestTimeoutMs']),
};

const ARCHIVE_KEYS = new Set(['bucket', 'prefix', 'retentionDays', 'region', 'endpoint', 'credentials', 'requestTimeoutMs']);

/** S3 bucket naming rules: 3-63 of lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit. */
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

function validateAudit(audit: unknown): asserts audit is AuditSettings {
  const a = validateKindSetting('audit', audit, AUDIT_KINDS, '{"kind": "file"} or {"kind": "dynamodb", "table": ...}');
  if (a.kind !== 'dynamodb') return;
  if ('replicaId' in a && (typeof a.replicaId !== 'string' || !CHAIN_ID.test(a.replicaId))) throw new ConfigError('audit.replicaId must be 1-64 of A-Z a-z 0-9 . _ - (this replica\'s chain id)');
  // A transaction holds the batch's records, its seal and the chain head: fewer than 3 items hold no record.
  if ('maxBatchItems' in a && (!Number.isInteger(a.maxBatchItems) || (a.maxBatchItems as number) < 3 || (a.maxBatchItems as number) > 100)) {
    throw new ConfigError('audit.maxBatchItems must be an integer in 3..100 (records, seal and chain head per DynamoDB transaction)');
  }
  if (!('archive' in a)) return;
  const r = a.archive as Record<string, unknown> | null;
  if (typeof r !== 'object' || r === null || Array.isArray(r)) throw new ConfigError('audit.archive must be an object: {"bucket": ..., "retentionDays": ...}');
  for (const key of Object.keys(r)) if (!ARCHIVE_KEYS.has(key)) throw new ConfigError(`audit.archive: unknown setting "${key}"`);
  if (typeof r.bucket !== 'string' || !BUCKET_NAME.test(r.bucket) || r.bucket.includes('..')) throw new ConfigError('audit.archive.bucket must be an S3 bucket name (3-63 of a-z 0-9 . -)');
  if ('prefix' in r && (typeof r.prefix !== 'string' || r.prefix.length > 256 || r.prefix.startsWith('/'))) throw new ConfigError('audit.archive.prefix must be a string of at most 256 characters, not starting with "/"');
  if (!Number.isInteger(r.retentionDays) || (r.retentionDays as number) < 1 || (r.retentionDays as number) > 36_500) throw new ConfigError('audit.archive.retentionDays must be an integer number of days in 1..36500');
  validateAwsEndpoint('audit.archive', r);
  if ('requestTimeoutMs' in r && (!Number.isInteger(r.requestTimeoutMs) || (r.requestTimeoutMs as number) < 1 || (r.requestTimeoutMs as number) > 600_000)) {
    throw new ConfigError('audit.archive.requestTimeoutMs must be an integer in 1..600000');
  }
  validateAwsCredentials('audit.archive', r);
}

const EC2_KEYS = new Set(['tagCacheSeconds', 'maxCachedInstances', 'region', 'endpoint', 'credentials', 'maxAttempts', 'requestTimeoutMs']);

/** The `ec2` setting: a short tag cache (a removed tag must stop releases soon), bounded, with a deadline. */
function validateEc2(ec2: unknown): asserts ec2 is Ec2Settings {
  if (typeof ec2 !== 'object' || ec2 === null || Array.isArray(ec2)) throw new ConfigError('ec2 must be an object: {"tagCacheSeconds": 30, "region": ..., "endpoint": ...}');
  const o = ec2 as Record<string, unknown>;
  for (const key of Object.keys(o)) if (!EC2_KEYS.has(key)) throw new ConfigError(`ec2: unknown setting "${key}"`);
  for (const [key, min, max] of [['tagCacheSeconds', 0, 300], ['maxCachedInstances', 1, 1_000_000], ['maxAttempts', 1, 10], ['requestTimeoutMs', 1, 60_000]] as const) {
    if (key in o && (!Number.isInteger(o[key]) || (o[key] as number) < min || (o[key] as number) > max)) throw new ConfigError(`ec2.${key} must be an integer in ${min}..${max}`);
  }
  validateAwsEndpoint('ec2', o);
  validateAwsCredentials('ec2', o);
}

/** `region` (an AWS region name) and `endpoint` (an http or https URL) of a setting `name` that reaches AWS, when present. */
function validateAwsEndpoint(name: string, o: Record<string, unknown>): void {
  if ('region' in o && (typeof o.region !== 'string' || !/^[a-z0-9-]{1,64}$/.test(o.region))) throw new ConfigError(`${name}.region must be an AWS region name such as "eu-west-1"`);
  if ('endpoint' in o) {
    let url: URL | undefined;
    try {
      url = typeof o.endpoint === 'string' ? new URL(o.endpoint) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || !['http:', 'https:'].includes(url.protocol)) throw new ConfigError(`${name}.endpoint must be an http(s) URL`);
  }
}

/** `credentials` of a setting `name` that reaches AWS, when present: both keys are strings. */
function validateAwsCredentials(name: string, o: Record<string, unknown>): void {
  if ('credentials' in o) {
    const c = o.credentials as Record<string, unknown> | null;
    if (typeof c !== 'object' || c === null || typeof c.accessKeyId !== 'string' || typeof c.secretAccessKey !== 'string') {
      throw new ConfigError(`${name}.credentials must have accessKeyId and secretAccessKey`);
    }
  }
}

function validateNonces(nonces: unknown): asserts nonces is NonceRegistrySettings {
  validateKindSetting('nonces', nonces, NONCE_KINDS, '{"kind": "memory"} or {"kind": "dynamodb", "table": ...}', { maxRemembered: 10_000_000 });
}

/**
 * A shared component's setting (`nonces`, `quarantine`, `keys`): `{ kind, ... }`, with only the settings
 * that kind takes; the DynamoDB kind names its table and may override the AWS SDK client (region,
 * endpoint, attempts, timeout; credentials only from code). Returns the object for kind-specific checks.
 */
function validateKindSetting(name: string, value: unknown, kinds: Record<string, ReadonlySet<string>>, shape: string, limits: Record<string, number> = {}): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ConfigError(`${name} must be an object: ${shape}`);
  const o = value as Record<string, unknown>;
  if (typeof o.kind !== 'string' || !Object.hasOwn(kinds, o.kind)) throw new ConfigError(`${name}.kind must be ${Object.keys(kinds).map((k) => `"${k}"`).join(' or ')}`);
  const allowed = kinds[o.kind]!;
  for (const key of Object.keys(o)) if (!allowed.has(key)) throw new ConfigError(`${name}: unknown setting "${key}" for kind "${o.kind}"`);
  for (const [key, max] of Object.entries({ ...limits, maxAttempts: 10, requestTimeoutMs: 60_000 })) {
    if (key in o && (!Number.isInteger(o[key]) || (o[key] as number) < 1 || (o[key] as number) > max)) throw new ConfigError(`${name}.${key} must be an integer in 1..${max}`);
  }
  if (o.kind !== 'dynamodb') return o;
  if (typeof o.table !== 'string' || !TABLE_NAME.test(o.table)) throw new ConfigError(`${name}.table must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -)`);
  validateAwsEndpoint(name, o);
  validateAwsCredentials(name, o);
  return o;
}

/**
 * With a shared (DynamoDB) store, the parts of this config that are still per
 * broker: each is a promise replicas would not keep (a document replayed to
 * every replica released once per replica, quarantines per replica, each
 * replica signing with its own key). Empty for a file store (one broker).
 */
export function perBrokerParts(config: BrokerConfig): string[] {
  if (typeof config.store === 'string') return [];
  const parts: string[] = [];
  if (config.nonces.kind === 'memory') parts.push('nonces (single use per broker, not across replicas)');
  if (config.quarantine.kind === 'memory') parts.push('quarantine (per broker)');
  if (config.keys.kind === 'file') parts.push('keys (each broker signs with its own key under stateDir)');
  if (config.audit.kind === 'file') parts.push('audit (each broker writes its own file under stateDir; lost with the instance)');
  if (config.gateway && (config.gateway.budgets?.kind ?? 'memory') === 'memory') parts.push('gateway budgets (each broker counts its own calls: N replicas allow N times the budget)');
  return parts;
}
