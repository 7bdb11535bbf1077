/**
 * Several real `keygate broker` processes on one DynamoDB config (moto_server),
 * for the multi-replica tests and the replicas benchmark: the shared config,
 * the KMS key the config names, replica processes (spawn, SIGKILL, restart,
 * stop), the CLI as an asynchronous subprocess (for admins racing each other),
 * and `recordedReleases`, the one place that reads what the audit recorded.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CreateAliasCommand, CreateKeyCommand, KMSClient } from '@aws-sdk/client-kms';
import { DynamoDbChainReader } from '../../broker/audit/dynamodb-chains.js';
import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';
import { BIN, type Run } from './cli.js';
import { awsOf, type Moto } from './moto.js';

/** The KMS alias of examples/broker-dynamodb.json: shared keys and `--provider aws-kms` bindings. */
export const KMS_ALIAS = 'alias/keygate';

/** Creates a symmetric KMS key in moto and points `alias` at it (moto starts empty). */
export async function createKmsAlias(moto: Moto, alias = KMS_ALIAS): Promise<void> {
  const kms = new KMSClient(awsOf(moto));
  try {
    const created = await kms.send(new CreateKeyCommand({ Description: 'keygate replicas (test)' }));
    await kms.send(new CreateAliasCommand({ AliasName: alias, TargetKeyId: created.KeyMetadata!.KeyId! }));
  } finally {
    kms.destroy();
  }
}

export interface ReplicaConfigOptions {
  /** Store table (bindings, revocations, shared keys), per test run. */
  readonly storeTable: string;
  /** Nonce and quarantine table, per test run. */
  readonly sharedTable: string;
  /** Extra trusted roots (the test PKI that mints the simulated enclave's documents). */
  readonly extraRootPems?: readonly string[];
  /** Default 1000, the example's value. */
  readonly maxStalenessMs?: number;
  /** Nonces in each broker's memory instead of the shared table (the benchmark's comparison). */
  readonly memoryNonces?: boolean;
  /** The DynamoDB audit table (one chain per replica), as in the example; without it each replica keeps a file log under its state directory. */
  readonly auditTable?: string;
  /** An S3 bucket for the audit archive (Object Lock; `store init` creates it). Only with auditTable. */
  readonly archiveBucket?: string;
}

/**
 * Writes `dir/keygate.json`, shaped like examples/broker-dynamodb.json (same kinds, same KMS alias, region,
 * endpoint and credentials from the SDK environment) with per-run table names, the test root trusted and no
 * rate limits or quarantine threshold (load tests must not be throttled by the abuse controls they do not test).
 */
export function writeReplicaConfig(dir: string, o: ReplicaConfigOptions): string {
  const example = JSON.parse(readFileSync(new URL('../../examples/broker-dynamodb.json', import.meta.url), 'utf8')) as Record<string, unknown>;
  const config = {
    ...example,
    stateDir: 'state',
    store: { kind: 'dynamodb', table: o.storeTable, consistency: { maxStalenessMs: o.maxStalenessMs ?? 1000 } },
    nonces: o.memoryNonces ? { kind: 'memory' } : { kind: 'dynamodb', table: o.sharedTable },
    quarantine: { kind: 'dynamodb', table: o.sharedTable },
    keys: { kind: 'dynamodb', table: o.storeTable, kmsKeyId: KMS_ALIAS },
    audit: o.auditTable ? { kind: 'dynamodb', table: o.auditTable, ...(o.archiveBucket ? { archive: { bucket: o.archiveBucket, prefix: 'audit/', retentionDays: 1 } } : {}) } : { kind: 'file' },
    ...(o.extraRootPems ? { extraRootPems: o.extraRootPems } : {}),
    rateLimits: { perClientPerSecond: 0, perIdentityPerSecond: 0, perSecretPerSecond: 0, quarantineAfterDenials: 0 },
  };
  const file = join(dir, 'keygate.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** Runs the real `keygate` bin without blocking this process (so several admins can race). Bounded: 60 s. */
export function keygateAsync(args: readonly string[], env: NodeJS.ProcessEnv, input?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

export interface Replica {
  readonly name: string;
  readonly stateDir: string;
  readonly url: string;
  readonly child: ChildProcessWithoutNullStreams;
  /** The id of the audit chain this process writes, when the audit is on DynamoDB (from its start log line). */
  chainId(): string | undefined;
  /** Resolves when the process has exited (for any reason). */
  readonly exited: Promise<void>;
  stderr(): string;
}

/**
 * Spawns `keygate broker --config CONFIG --state STATEDIR --listen 127.0.0.1:0 --dev` (every replica the
 * same config; its own state directory, so its own file audit log for now) and resolves once it listens.
 */
export async function spawnReplica(name: string, config: string, stateDir: string, env: NodeJS.ProcessEnv): Promise<Replica> {
  const child = spawn(process.execPath, [BIN, 'broker', '--config', config, '--state', stateDir, '--listen', '127.0.0.1:0', '--dev', '--workers', '1'], { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let chain: string | undefined; // from the start log line, caught before the tail buffer can drop it
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-20_000);
    chain ??= /"message":"audit log".*?"chain":"([^"]+)"/.exec(stderr)?.[1];
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`replica ${name} did not listen within 60 s: ${stderr}`));
    }, 60_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`replica ${name} exited (${code ?? signal}) before listening: ${stderr}`));
    });
  });
  return { name, stateDir, url, child, chainId: () => chain, exited, stderr: () => stderr };
}

/** Stops a replica (SIGTERM: it closes and seals its audit log), escalating to SIGKILL after 15 s. Idempotent. */
export async function stopReplica(r: Replica, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (r.child.exitCode !== null || r.child.signalCode !== null) return;
  r.child.kill(signal);
  const timer = setTimeout(() => r.child.kill('SIGKILL'), 15_000);
  await r.exited;
  clearTimeout(timer);
}

/** A release a client saw acknowledged (HTTP 200 with the secret): which replica answered, for which document. */
export interface AcknowledgedRelease {
  readonly replica: string;
  /** The challenge nonce of the document, hex (as the audit records it). */
  readonly nonce: string;
  /** SHA-256 of the attestation document, hex (as the audit records it). */
  readonly docSha256: string;
}

export interface RecordedReleases {
  /** `keygate audit verify --config CONFIG --json` (every chain in the audit table), as run. */
  readonly verify: Run;
  /** Per chain id: `nonce/docSha256` of every RELEASED decision in it. */
  readonly released: ReadonlyMap<string, ReadonlySet<string>>;
}

export const releaseKey = (r: Pick<AcknowledgedRelease, 'nonce' | 'docSha256'>): string => `${r.nonce}/${r.docSha256}`;

/**
 * What the replicas' audit recorded: every chain in the DynamoDB audit table verified with `keygate audit
 * verify --config` (seal signatures checked under the shared broker key, which the CLI loads itself), and
 * the RELEASED decisions of each chain, read from the table.
 */
export async function recordedReleases(config: string, audit: DynamoDbTableSettings, env: NodeJS.ProcessEnv): Promise<RecordedReleases> {
  const verify = await keygateAsync(['audit', 'verify', '--config', config, '--json'], env);
  const reader = new DynamoDbChainReader(audit);
  const released = new Map<string, Set<string>>();
  try {
    for (const chain of await reader.listChains()) {
      const mine = new Set<string>();
      for await (const line of reader.readLines(chain.id)) {
        const r = JSON.parse(line) as { decision?: string; code?: string; nonce?: string; docSha256?: string };
        if (r.decision === 'release' && r.code === 'RELEASED' && r.nonce && r.docSha256) mine.add(releaseKey({ nonce: r.nonce, docSha256: r.docSha256 }));
      }
      released.set(chain.id, mine);
    }
  } finally {
    reader.close();
  }
  return { verify, released };
}
