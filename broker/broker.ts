import { readFile } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { dirname, join, relative } from 'node:path';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import type { Hono } from 'hono';
import { AWS_NITRO_ROOT_G1_PEM, createVerifier, pemCertificates, type TrustedRoot } from './verify/index.js';
import { createThreadPoolVerifier } from './verify/verify.js';
import type { BindingStore } from './store/store.js';
import { openStore, storeLabel } from './store/open-store.js';
import { ensureDirectory } from '../lib/durable-fs.js';
import { CodedError } from '../lib/coded-error.js';
import { openProviders, statePaths } from './state.js';
import { keyRefOf, SecretUnavailableError, type KeyProviders } from './kms/provider.js';
import { closeKeyProviders } from './kms/registry.js';
import { cachedCheck } from '../lib/cached-check.js';
import { openInstanceTags } from './ec2/instance-tags.js';
import type { ProviderName } from './policy/types.js';
import { openAuditSink } from './audit/open-sink.js';
import type { AuditSink } from './audit/sink.js';
import { ChallengeService } from './challenge.js';
import { openNonceRegistry } from './nonce/open-registry.js';
import { openQuarantine } from './quarantine/open-quarantine.js';
import { loadPublicKeyFile, type SigningKey } from './signing-key.js';
import { loadSharedKeys } from './keys/open-key-source.js';
import { BrokerMetrics } from './metrics.js';
import { ReleaseService } from './release.js';
import { openApprovalStore } from './approval/open-approvals.js';
import { ApprovalGate } from './approval/gate.js';
import { startApprovalSweeper } from './approval/sweeper.js';
import { createBrokerApp } from './server.js';
import { BrokerError } from './errors.js';
import { assertThreadPoolFits, parseListen, perBrokerParts, threadPoolSize, type BrokerConfig } from './config.js';
import { createLogger, effectiveLogLevel, type Logger } from './log.js';
import { startupSummary } from './ops/startup-summary.js';
import { createAdminApp } from './admin-api/app.js';
import { DurableJtiRegistry } from './admin-api/durable-jti.js';
import { adminApiKey } from './admin-api/token.js';
import { acquireLock, describeOwner, LockBusyError, type HeldLock } from './store/lock.js';
import { openDelegationRegistry } from './delegation/open-delegations.js';
import { DelegationGate } from './delegation/gate.js';
import { GatewayService } from './gateway/service.js';
import { openBudgetCounter } from './gateway/open-budget.js';
import { listenGateway } from './gateway/listener.js';
import type { PrimaryParts } from './cluster/open-primary-parts.js';

/** A running (or ready-to-serve) broker and its parts. */
export interface Broker {
  readonly app: Hono;
  readonly store: BindingStore;
  readonly audit: AuditSink;
  readonly signingKey: SigningKey;
  readonly providers: KeyProviders;
  readonly metrics: BrokerMetrics;
  readonly release: ReleaseService;
  /** The admin API (`/v1/admin/...`), when adminApiKeys are configured; served on its own listener (adminListen). */
  readonly adminApp?: Hono;
  /** The credential gateway (inject bindings), when `gateway` is configured; served on its own TLS listener. */
  readonly gateway?: GatewayService;
  /** Closes the audit log and provider clients (and the server, when listening). */
  close(): Promise<void>;
}

export interface BrokerOptions {
  readonly clock?: () => number;
  readonly log?: Logger;
  /** Audit-lock timing (tests shorten it): the heartbeat period, and the heartbeat age after which a holder that cannot be checked by pid counts as gone. */
  readonly auditLock?: { readonly heartbeatMs?: number; readonly staleMs?: number };
  /** How often ended approval requests nobody asked about are closed and audited (tests shorten it). Default 30 s. */
  readonly approvalSweepMs?: number;
  /** This process is a worker of `keygate broker --workers N`: a memory nonce registry and quarantine are these, the primary's (asked over IPC). */
  readonly viaPrimary?: PrimaryParts;
}

/** Another live broker holds the audit file: two writers would interleave one hash chain. */
export class AuditFileInUseError extends CodedError<'AUDIT_FILE_IN_USE'> {
  override readonly name = 'AuditFileInUseError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('AUDIT_FILE_IN_USE', message, options);
  }
}

/** Heartbeat age after which the audit lock of a broker that cannot be checked by pid (another container or machine) counts as abandoned. */
export const AUDIT_LOCK_STALE_MS = 30_000;

/**
 * Holds `<audit>.lock` for the broker's lifetime, so a second broker on the
 * same audit file refuses to start. A lock left by a killed broker in this pid
 * namespace is taken over at once (its holder is checked by pid and start
 * time); one from another pid namespace or machine (a restarted container) is
 * judged by its heartbeat: this broker waits until it is `staleMs` old, or
 * refuses if it keeps being refreshed. `onLost` is called when a heartbeat
 * finds the lock taken over: another broker now writes the audit file.
 */
async function lockAuditFile(audit: string, log: Logger, timing: BrokerOptions['auditLock'], onLost: () => void): Promise<HeldLock> {
  await ensureDirectory(dirname(audit));
  const staleMs = timing?.staleMs ?? AUDIT_LOCK_STALE_MS;
  const options = {
    foreignStaleMs: staleMs,
    heartbeatMs: timing?.heartbeatMs,
    onCompromised: (reason: string) => {
      log('error', 'audit file lock lost: another broker took over the audit file; this broker stops writing it and refuses releases (restart it once only one broker uses the file)', { lock: `${audit}.lock`, reason });
      onLost();
    },
  };
  try {
    try {
      return await acquireLock(`${audit}.lock`, { ...options, waitMs: 0 });
    } catch (err) {
      if (!(err instanceof LockBusyError && err.foreign)) throw err;
      log('warn', 'audit file lock is held by a broker in another pid namespace or on another machine; waiting for its heartbeat to stop', { lock: `${audit}.lock`, holder: err.holder ? describeOwner(err.holder) : 'unknown', staleMs });
      return await acquireLock(`${audit}.lock`, { ...options, waitMs: staleMs + 5_000 });
    }
  } catch (err) {
    if (!(err instanceof LockBusyError)) throw err;
    throw new AuditFileInUseError(
      `another keygate broker (${err.holder ? describeOwner(err.holder) : 'unknown holder'}${err.foreign ? ', which keeps refreshing its lock' : ''}) is using the audit file ${audit}; ` +
        'two brokers on one audit file would corrupt its hash chain. Stop that broker, or give this one its own stateDir/auditFile ' +
        `(the lock is ${audit}.lock)`,
    );
  }
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

/**
 * Assembles a broker from its config: opens store, keys, providers and audit log. If any part fails to
 * open, what was already opened is closed again (clients, the audit lock) before the error is thrown.
 */
export async function createBroker(config: BrokerConfig, options: BrokerOptions = {}): Promise<Broker> {
  // The pool size is this process's: checked here, where the broker runs, not by every command reading its config.
  assertThreadPoolFits(config.verifyThreads);
  const opened: Array<() => unknown> = [];
  try {
    return await assembleBroker(config, options, opened);
  } catch (err) {
    for (const close of opened.reverse()) await Promise.resolve().then(close).catch(() => undefined);
    throw err;
  }
}

/** createBroker's body; `opened` collects how to close each part once it is open. */
async function assembleBroker(config: BrokerConfig, options: BrokerOptions, opened: Array<() => unknown>): Promise<Broker> {
  const log = options.log ?? createLogger({ level: effectiveLogLevel(config.logLevel) });
  const clock = options.clock ?? Date.now;
  if (config.dev) log('warn', 'DEVELOPMENT MODE: the NSM simulator root is trusted; not for production secrets', { store: config.store, stateDir: config.stateDir });
  const perBroker = perBrokerParts(config);
  if (perBroker.length) log('warn', 'SHARED STORE, PER-BROKER STATE: replicas of this config do not share these; see "Running several brokers"', { parts: perBroker });
  const paths = statePaths(config);
  const metrics = new BrokerMetrics({ secretLabels: config.metricsSecretLabels });
  const store = await openStore(config, {
    onProblem: (p) => {
      metrics.storeProblems.inc();
      log('error', 'store file rejected; what it governs is unavailable until it is fixed', { file: p.file, problem: p.message });
    },
  });
  opened.push(() => store.close());
  // The keys every replica shares (files under stateDir, or DynamoDB + KMS); any failure stops the start here.
  const { signingKey, challengeKey } = await loadSharedKeys(config.keys, paths);
  log('info', 'shared keys', config.keys.kind === 'dynamodb' ? { kind: 'dynamodb', table: config.keys.table, kmsKeyId: config.keys.kmsKeyId, kid: signingKey.kid } : { kind: 'file', kid: signingKey.kid });
  const providers = await openProviders(config);
  opened.push(() => closeKeyProviders(providers));
  const refusedLocal = typeof config.store === 'string' ? 0 : [...store.snapshot().bindings.values()].filter((b) => b.provider === 'local').length;
  // Not a refusal to start: one stray binding must not take every replica down. Each such name is denied (audited).
  if (refusedLocal) log('error', 'local-provider bindings on a shared store are denied to every enclave (SECRET_UNAVAILABLE, LocalProviderRefused) until re-bound with --provider aws-kms; keygate list names them', { bindings: refusedLocal });
  let stopAudit = (): void => {};
  // The file lock is for the file log only: on DynamoDB each replica writes its own chain, guarded by its head item.
  const auditLock = config.audit.kind === 'file' ? await lockAuditFile(paths.audit, log, options.auditLock, () => stopAudit()) : undefined;
  opened.push(() => auditLock?.release());
  const { sink: audit, where: auditWhere } = await openAuditSink(config.audit, paths.audit, { key: signingKey.privateKey, kid: signingKey.kid }, { log, maxFileBytes: config.auditMaxFileBytes });
  opened.push(() => audit.close());
  // Audit lock taken over (this broker was judged gone: a paused VM, clock trouble): the file may be another
  // broker's now. Abandoning the log fails closed without another byte: appends (so releases) are refused
  // and /readyz reports 503.
  stopAudit = () => audit.abandon('the audit file lock was taken over by another broker');
  if (auditLock?.compromised) stopAudit();
  log('info', 'audit log', auditWhere);
  const challenge = new ChallengeService(challengeKey);
  const nonces = config.nonces.kind === 'memory' && options.viaPrimary ? options.viaPrimary.nonces : await openNonceRegistry(config.nonces);
  opened.push(() => nonces.close());
  log('info', 'nonce registry', config.nonces.kind === 'dynamodb' ? { kind: 'dynamodb', table: config.nonces.table } : { kind: options.viaPrimary ? 'memory (the primary process)' : 'memory' });
  const r = config.rateLimits;
  const quarantine =
    config.quarantine.kind === 'memory' && options.viaPrimary
      ? options.viaPrimary.quarantine
      : await openQuarantine(config.quarantine, { threshold: r.quarantineAfterDenials, windowMs: r.quarantineWindowSeconds * 1000, quarantineMs: r.quarantineSeconds * 1000 });
  opened.push(() => quarantine.close());
  log('info', 'quarantine', config.quarantine.kind === 'dynamodb' ? { kind: 'dynamodb', table: config.quarantine.table } : { kind: options.viaPrimary ? 'memory (the primary process)' : 'memory' });
  const roots = await loadRoots(config, log);
  const adminKeys = await Promise.all((config.adminKeys ?? []).map((file) => loadPublicKeyFile(file)));
  // Said at start, so a baseline walk that ends in BASELINE_NOT_APPROVED is explained by the log, not guessed at.
  log('info', 'baseline approvals', { adminKeys: adminKeys.length, approvalsRequired: config.approvalsRequired });
  if (!adminKeys.length && [...store.snapshot().bindings.values()].some((b) => b.allow.some((r) => r.baseline !== undefined))) {
    log('warn', 'no adminKeys configured: rules that name a baseline are denied (BASELINE_NOT_APPROVED) until adminKeys lists the approvers\' public keys');
  }
  // Loads @aws-sdk/client-ec2 only on the first lookup: a broker without ec2Tag bindings never asks EC2.
  const instanceTags = openInstanceTags(config.ec2);
  opened.push(() => instanceTags.close());
  // Delegations live beside the store (its directory, or its table's own partition), shared by every replica.
  const delegationRegistry = await openDelegationRegistry(config.store);
  opened.push(() => delegationRegistry.close());
  // Human approval requests live beside the store (its directory, or its DynamoDB table's "approval" partition).
  const approvalStore = await openApprovalStore(config.store);
  opened.push(() => approvalStore.close());
  const approvalGate = new ApprovalGate(approvalStore);
  if (config.verifyThreads > 0) log('info', 'signature checks on the thread pool', { verifyThreads: config.verifyThreads, threadPoolSize: threadPoolSize() });
  const release = new ReleaseService({
    verifier: createVerifier(),
    ...(config.verifyThreads > 0 ? { verifyOnPool: createThreadPoolVerifier({ threads: config.verifyThreads }) } : {}),
    roots,
    allowDebug: config.allowDebug,
    maxDocumentAgeMs: config.maxDocumentAgeSeconds * 1000,
    store,
    providers,
    audit,
    challenge,
    nonces,
    quarantine,
    signingKey,
    metrics,
    secretCacheTtlMs: config.secretCacheTtlSeconds * 1000,
    rateLimits: config.rateLimits,
    adminKeys,
    approvalsRequired: config.approvalsRequired,
    instanceTags,
    approvals: approvalGate,
    clock,
    delegations: new DelegationGate(delegationRegistry, signingKey, config.delegation),
  });
  const approvalSweeper = startApprovalSweeper({ gate: approvalGate, store, audit, clock, log, ...(options.approvalSweepMs ? { intervalMs: options.approvalSweepMs } : {}) });
  opened.push(() => approvalSweeper.stop());

  const checkProviders = async (): Promise<void> => {
    // The keys the servable bindings use, per provider: aws-kms checks each with DescribeKey (Enabled).
    const used = new Map<ProviderName, Set<string>>();
    for (const b of store.snapshot().bindings.values()) {
      if (b.revoked) continue;
      const keys = used.get(b.provider) ?? used.set(b.provider, new Set()).get(b.provider)!;
      const keyRef = keyRefOf(b);
      if (keyRef) keys.add(keyRef);
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
  };

  // The shared tables (a DynamoDB store, nonces, quarantine, the audit chain's head): one cheap read each. /readyz is unauthenticated,
  // so one check at a time and its answer (failure too) reused for a while, like the provider check below:
  // probes cannot turn into table calls. Reasons name the component and table, never a secret.
  const sharedStore = typeof config.store !== 'string';
  const checkShared = async (): Promise<void> => {
    const named = (what: string) => (err: unknown): never => {
      throw new BrokerError('STORE_UNAVAILABLE', `${what} is unavailable (${err instanceof Error ? err.message : 'unknown error'})`);
    };
    await Promise.all([
      sharedStore ? store.refresh().then(() => undefined, named(`the store (${storeLabel(config.store)})`)) : undefined,
      nonces.check().catch(named('the shared nonce registry')),
      quarantine.check().catch(named('the shared quarantine')),
      audit.check?.().catch(named(`the audit table (${config.audit.kind === 'dynamodb' ? config.audit.table : 'file'})`)),
      gateway?.checkBudget().catch(named('the gateway budget counter')),
    ]);
  };

  // /readyz is unauthenticated: one check at a time and its answer (failure too) reused for a while, so
  // probes cannot turn into KMS calls (the account's request quota) or table reads.
  const sharedReady = cachedCheck(checkShared);
  const providersReady = cachedCheck(checkProviders);
  // EC2 is asked only while a servable binding restricts instances by tag; releases of those fail closed without it.
  const ec2Ready = cachedCheck(async () => {
    if (![...store.snapshot().bindings.values()].some((b) => !b.revoked && b.instances !== undefined && 'ec2Tag' in b.instances)) return;
    await instanceTags.check().catch((err: unknown) => {
      throw new BrokerError('STORE_UNAVAILABLE', `EC2 (instance tags) is unavailable (${err instanceof Error ? err.message : 'unknown error'})`);
    });
  });
  const ready = async (): Promise<void> => {
    if (!audit.healthy) throw new BrokerError('INTERNAL_ERROR', 'audit log is not writable');
    // The file store is local (a few stats): reloaded on every probe.
    if (!sharedStore) await store.refresh();
    await sharedReady();
    const storeProblems = store.problems();
    if (storeProblems.length) {
      // /readyz is unauthenticated: binding files are counted, not named (their names are the secrets' names).
      const storeRoot = storeLabel(config.store);
      const bindingFiles = storeProblems.filter((p) => relative(storeRoot, p.file).startsWith('bindings/')).length;
      const shown = [
        ...storeProblems.filter((p) => !relative(storeRoot, p.file).startsWith('bindings/')).map((p) => `${relative(storeRoot, p.file)} (${p.message})`),
        ...(bindingFiles ? [`${bindingFiles} binding file${bindingFiles > 1 ? 's' : ''} (named in the broker log and by keygate list)`] : []),
      ].join('; ');
      throw new BrokerError('STORE_UNAVAILABLE', `store files fail validation: ${shown}`);
    }
    await providersReady();
    await ec2Ready();
  };
  const app = createBrokerApp({ release, challenge, metrics, brokerKey: signingKey.publicJwk, maxBodyBytes: config.maxBodyBytes, clock, ready, requestLog: log });
  // Admin API keys are not the baseline approvers' (adminKeys): a token key cannot approve a build, nor the reverse.
  const adminApiKeys = await Promise.all((config.adminApiKeys ?? []).map(async (file) => adminApiKey(await loadPublicKeyFile(file), `adminApiKeys: ${file}`)));
  if (adminApiKeys.length) log('info', 'admin API enabled', { keys: adminApiKeys.map((k) => k.kid), audience: config.adminAudience, listen: config.adminListen });
  // Token jtis must stay used across restarts: a per-process nonce registry forgets on restart, so the admin
  // API then keeps its own jti file under stateDir (a shared DynamoDB registry outlives restarts already).
  const adminReplay =
    adminApiKeys.length && config.nonces.kind === 'memory'
      ? await DurableJtiRegistry.open(join(config.stateDir, 'admin-jti.log'), await openNonceRegistry({ kind: 'memory', ...(config.nonces.maxRemembered !== undefined ? { maxRemembered: config.nonces.maxRemembered } : {}) }), clock())
      : nonces;
  const gateway = config.gateway ? await openGateway(config, { release, challenge, signingKey, audit, clock }) : undefined;
  if (gateway) opened.push(() => gateway.close());
  const adminApp = adminApiKeys.length
    ? createAdminApp({ store, providers, audit, keys: adminApiKeys, approverKeys: adminKeys, audience: config.adminAudience, approvalsRequired: config.approvalsRequired, replay: adminReplay, maxBodyBytes: config.maxBodyBytes, clock, log, requestLog: log })
    : undefined;
  return {
    app,
    ...(adminApp ? { adminApp } : {}),
    ...(gateway ? { gateway } : {}),
    store,
    audit,
    signingKey,
    providers,
    metrics,
    release,
    close: async () => {
      approvalSweeper.stop();
      try {
        await audit.close();
      } finally {
        await auditLock?.release();
      }
      closeKeyProviders(providers);
      gateway?.close();
      nonces.close();
      quarantine.close();
      instanceTags.close();
      delegationRegistry.close();
      approvalStore.close();
      store.close();
    },
  };
}

/** A broker listening on its configured address. */
export interface RunningBroker extends Broker {
  readonly url: string;
  readonly server: ServerType;
  /** The admin API's own listener (adminListen), when the admin API is enabled. */
  readonly adminUrl?: string;
  /** The credential gateway's TLS listener (gateway.listen), when configured. */
  readonly gatewayUrl?: string;
}

/** The gateway service of a broker: its budget counter from the factory, the upstream CA (tests only) read now. */
async function openGateway(config: BrokerConfig, parts: Pick<ConstructorParameters<typeof GatewayService>[0], 'release' | 'challenge' | 'signingKey' | 'audit' | 'clock'>): Promise<GatewayService> {
  const settings = config.gateway!;
  const budget = await openBudgetCounter(settings.budgets);
  return new GatewayService({
    ...parts,
    budget,
    ...(settings.upstreamCaFile ? { upstreamCa: await readFile(settings.upstreamCaFile, 'utf8') } : {}),
    maxTokenSeconds: settings.maxTokenSeconds ?? 300,
    upstreamTimeoutMs: settings.upstreamTimeoutMs ?? 60_000,
    maxBufferedBodyBytes: settings.maxBufferedBodyBytes ?? 256 * 1024 * 1024,
  });
}

/**
 * node:http limits that keep slow or idle clients from holding connections.
 * headersTimeout and requestTimeout are enforced only on each
 * connectionsCheckingInterval tick (node's default: 30 s), so the tick is tied
 * to the headers timeout: a limit is overrun by at most a tenth of it (<= 1 s).
 */
function httpLimits(config: BrokerConfig): { headersTimeout: number; requestTimeout: number; keepAliveTimeout: number; connectionsCheckingInterval: number } {
  const headersTimeout = Math.round(config.headersTimeoutSeconds * 1000);
  return {
    headersTimeout,
    requestTimeout: Math.round(config.requestTimeoutSeconds * 1000),
    keepAliveTimeout: Math.round(config.keepAliveTimeoutSeconds * 1000),
    connectionsCheckingInterval: Math.min(1000, Math.max(25, Math.floor(headersTimeout / 10))),
  };
}

/** Starts the HTTP(S) server for a broker. Port 0 picks a free port (tests). */
export async function startBroker(config: BrokerConfig, options: BrokerOptions = {}): Promise<RunningBroker> {
  const log = options.log ?? createLogger({ level: effectiveLogLevel(config.logLevel) });
  const broker = await createBroker(config, { ...options, log });
  const startedAt = performance.now();
  const { host, port } = parseListen(config.listen);
  const tls = config.tls ? { key: await readFile(config.tls.key), cert: await readFile(config.tls.cert) } : undefined;
  const limits = httpLimits(config);
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serve(
      {
        fetch: broker.app.fetch,
        hostname: host,
        port,
        // A TLS handshake gets no longer than the request headers would.
        serverOptions: tls ? { ...tls, ...limits, handshakeTimeout: limits.headersTimeout } : limits,
        ...(tls ? { createServer: createHttpsServer } : {}),
      },
      () => resolve(s),
    );
    // Beyond the cap, node closes new connections on accept (and emits 'drop').
    s.maxConnections = config.maxConnections;
    s.on('drop', () => broker.metrics.droppedConnections.inc());
    s.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `${tls ? 'https' : 'http'}://${shownHost}:${address.port}`;
  log('info', 'keygate broker listening', { url, store: config.store });
  // The admin API never shares the public port: its own listener, same TLS and connection limits.
  const admin = broker.adminApp ? await listenAdmin(broker.adminApp, config, tls, limits).catch(async (err: unknown) => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await broker.close();
    throw err;
  }) : undefined;
  if (admin) log('info', 'keygate admin API listening', { url: admin.url });
  const gatewayListener = broker.gateway ? await listenGateway(broker.gateway, config.gateway!, limits, config.maxConnections).catch(async (err: unknown) => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (admin) await new Promise<void>((resolve) => admin.server.close(() => resolve()));
    await broker.close();
    throw err;
  }) : undefined;
  if (gatewayListener) log('info', 'keygate credential gateway listening', { url: gatewayListener.url });
  log('info', 'keygate broker started', { ...(await startupSummary(config, { url, ...(admin ? { adminUrl: admin.url } : {}) })) });
  return {
    ...broker,
    url,
    server,
    ...(admin ? { adminUrl: admin.url } : {}),
    ...(gatewayListener ? { gatewayUrl: gatewayListener.url } : {}),
    close: async () => {
      await gatewayListener?.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
      if (admin) {
        await new Promise<void>((resolve) => {
          admin.server.close(() => resolve());
          (admin.server as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
      }
      await broker.close();
      log('info', 'keygate broker stopped', { url, uptimeSeconds: Math.round(performance.now() - startedAt) / 1000 });
    },
  };
}

/** Serves the admin app on adminListen (TLS as for the API: the same cert, required off loopback). */
async function listenAdmin(app: Hono, config: BrokerConfig, tls: { key: Buffer; cert: Buffer } | undefined, limits: ReturnType<typeof httpLimits>): Promise<{ url: string; server: ServerType }> {
  const { host, port } = parseListen(config.adminListen);
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serve(
      { fetch: app.fetch, hostname: host, port, serverOptions: tls ? { ...tls, ...limits, handshakeTimeout: limits.headersTimeout } : limits, ...(tls ? { createServer: createHttpsServer } : {}) },
      () => resolve(s),
    );
    s.maxConnections = config.maxConnections;
    s.once('error', reject);
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return { url: `${tls ? 'https' : 'http'}://${shownHost}:${address.port}`, server };
}
