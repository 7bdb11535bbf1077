import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Hono } from 'hono';
import { AWS_NITRO_ROOT_G1_PEM, createVerifier, pemCertificates, type TrustedRoot } from './verify/index.js';
import { FileStore } from './store/file-store.js';
import { LocalKeyProvider, loadOrCreateKeyFile } from './kms/local.js';
import { AwsKmsKeyProvider } from './kms/aws-kms.js';
import { SecretUnavailableError, type KeyProvider } from './kms/provider.js';
import type { ProviderName } from './policy/types.js';
import { AuditLog } from './audit/log.js';
import { ChallengeService } from './challenge.js';
import { loadOrCreateSigningKey, loadPublicKeyFile, type SigningKey } from './signing-key.js';
import { BrokerMetrics } from './metrics.js';
import { ReleaseService } from './release.js';
import { createBrokerApp } from './server.js';
import { BrokerError } from './errors.js';
import { parseListen, type BrokerConfig } from './config.js';
import { stderrLogger, type Logger } from './log.js';

/** A running (or ready-to-serve) broker and its parts. */
export interface Broker {
  readonly app: Hono;
  readonly store: FileStore;
  readonly audit: AuditLog;
  readonly signingKey: SigningKey;
  readonly providers: ReadonlyMap<ProviderName, KeyProvider>;
  readonly metrics: BrokerMetrics;
  readonly release: ReleaseService;
  /** Closes the audit log and provider clients (and the server, when listening). */
  close(): Promise<void>;
}

export interface BrokerOptions {
  readonly clock?: () => number;
  readonly log?: Logger;
}

/** Paths of the broker's state files. */
export function statePaths(config: BrokerConfig): { signingKey: string; localKey: string; challengeKey: string; audit: string } {
  return {
    signingKey: join(config.stateDir, 'broker-signing-key.jwk'),
    localKey: join(config.stateDir, 'local-provider.key'),
    challengeKey: config.challengeKeyFile ?? join(config.stateDir, 'challenge.key'),
    audit: config.auditFile ?? join(config.stateDir, 'audit.jsonl'),
  };
}

/** Opens the key providers the store may need: local always, aws-kms as configured. */
export async function openProviders(config: BrokerConfig): Promise<Map<ProviderName, KeyProvider>> {
  const providers = new Map<ProviderName, KeyProvider>();
  providers.set('local', await LocalKeyProvider.open(statePaths(config).localKey));
  providers.set('aws-kms', new AwsKmsKeyProvider(config.kms ?? {}));
  return providers;
}

/**
 * `roots` (files) replaces the bundled AWS root; `extraRootPems` adds to
 * whatever set is in force. Any non-AWS root is logged loudly at start.
 */
async function loadRoots(config: BrokerConfig, log: Logger): Promise<TrustedRoot[]> {
  const fromFiles: string[] = [];
  for (const file of config.roots ?? []) fromFiles.push(await readFile(file, 'utf8'));
  const roots = [...(fromFiles.length ? fromFiles : [AWS_NITRO_ROOT_G1_PEM]), ...(config.extraRootPems ?? [])];
  for (const pem of roots) pemCertificates(pem); // fail at start, not at the first request
  const foreign = roots.filter((pem) => pem !== AWS_NITRO_ROOT_G1_PEM).length;
  if (foreign) log('warn', 'NON-AWS ROOTS ARE TRUSTED: attestation documents signed under them will be accepted', { roots: foreign, dev: config.dev });
  return roots;
}

/** Assembles a broker from its config: opens store, keys, providers and audit log. */
export async function createBroker(config: BrokerConfig, options: BrokerOptions = {}): Promise<Broker> {
  const log = options.log ?? stderrLogger;
  const clock = options.clock ?? Date.now;
  if (config.dev) log('warn', 'DEVELOPMENT MODE: local key provider and dev state; not for production secrets');
  const paths = statePaths(config);
  const metrics = new BrokerMetrics();
  const store = await FileStore.open(config.store, {
    onProblem: (p) => {
      metrics.storeProblems.inc();
      log('error', 'store file rejected; keeping its last good content', { file: p.file, problem: p.message });
    },
  });
  const signingKey = await loadOrCreateSigningKey(paths.signingKey);
  const providers = await openProviders(config);
  const audit = await AuditLog.open(paths.audit, { key: signingKey.privateKey, kid: signingKey.kid });
  const challenge = new ChallengeService(await loadOrCreateKeyFile(paths.challengeKey, 32));
  const roots = await loadRoots(config, log);
  const adminKeys = await Promise.all((config.adminKeys ?? []).map((file) => loadPublicKeyFile(file)));
  const release = new ReleaseService({
    verifier: createVerifier(),
    roots,
    allowDebug: config.allowDebug,
    maxDocumentAgeMs: config.maxDocumentAgeSeconds * 1000,
    store,
    providers,
    audit,
    challenge,
    signingKey,
    metrics,
    secretCacheTtlMs: config.secretCacheTtlSeconds * 1000,
    rateLimits: config.rateLimits,
    adminKeys,
    approvalsRequired: config.approvalsRequired,
    clock,
  });

  let readyUntil = 0;
  const ready = async (): Promise<void> => {
    if (!audit.healthy) throw new BrokerError('INTERNAL_ERROR', 'audit log is not writable');
    const now = clock();
    if (now < readyUntil) return;
    // The keys the servable bindings use, per provider: aws-kms checks each with DescribeKey (Enabled).
    const used = new Map<ProviderName, Set<string>>();
    for (const b of store.snapshot().bindings.values()) {
      if (b.revoked) continue;
      const keys = used.get(b.provider) ?? used.set(b.provider, new Set()).get(b.provider)!;
      if (b.kmsKeyId) keys.add(b.kmsKeyId);
    }
    for (const [name, keys] of used) {
      try {
        await providers.get(name)!.check([...keys]);
      } catch (err) {
        if (!(err instanceof SecretUnavailableError)) throw new BrokerError('KMS_UNAVAILABLE', `${name} key provider is unreachable`);
        release.forgetKeys(name, err.unusableKeys); // found disabled or deleted: stop serving its cached values now
        throw new BrokerError('SECRET_UNAVAILABLE', `a ${name} key in use is unusable (${err.providerError})`);
      }
    }
    readyUntil = now + 5_000;
  };

  const app = createBrokerApp({ release, challenge, metrics, brokerKey: signingKey.publicJwk, maxBodyBytes: config.maxBodyBytes, clock, ready });
  return {
    app,
    store,
    audit,
    signingKey,
    providers,
    metrics,
    release,
    close: async () => {
      await audit.close();
      (providers.get('aws-kms') as AwsKmsKeyProvider | undefined)?.destroy();
    },
  };
}

/** A broker listening on its configured address. */
export interface RunningBroker extends Broker {
  readonly url: string;
  readonly server: ServerType;
}

/** Starts the HTTP(S) server for a broker. Port 0 picks a free port (tests). */
export async function startBroker(config: BrokerConfig, options: BrokerOptions = {}): Promise<RunningBroker> {
  const broker = await createBroker(config, options);
  const { host, port } = parseListen(config.listen);
  const tls = config.tls ? { key: await readFile(config.tls.key), cert: await readFile(config.tls.cert) } : undefined;
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serve(
      {
        fetch: broker.app.fetch,
        hostname: host,
        port,
        ...(tls ? { createServer: createHttpsServer, serverOptions: tls } : {}),
      },
      () => resolve(s),
    );
    s.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${tls ? 'https' : 'http'}://${shownHost}:${address.port}`;
  (options.log ?? stderrLogger)('info', 'keygate broker listening', { url, store: config.store });
  return {
    ...broker,
    url,
    server,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
      await broker.close();
    },
  };
}
