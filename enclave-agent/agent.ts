import { createPublicKey, generateKeyPair, type JsonWebKey, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { calculateJwkThumbprint, importJWK, type JWK } from 'jose';
import {
  CHALLENGE_NONCE_BYTES,
  checkReleaseClaims,
  DEFAULT_MAX_CLOCK_SKEW_MS,
  isBrokerErrorCode,
  receivedItems,
  VersionFloor,
  type ChallengeAnswer,
  type ErrorAnswer,
  type ReceivedItem,
  type SignedReleaseClaims,
} from '../broker/protocol/index.js';
import type { Nsm } from '../vsock-shim/nsm/client.js';
import { NsmError } from '../vsock-shim/nsm/messages.js';
import { tcpTransport, type Transport } from '../vsock-shim/transport/transport.js';
import { parseHostPort } from '../lib/host-port.js';
import { AgentError } from './errors.js';
import { BrokerHttp } from './http.js';
import { sentDocument, type SentDocument } from './document.js';
import { CmsError, decryptRecipientEnvelope } from './cms.js';
import { openReleaseEnvelope } from './release-envelope.js';
import { parentOfToken, requestDelegation, type DelegateOptions, type Delegation, type DelegationParent } from './delegation.js';
import type { MeasurementValues } from '../broker/protocol/index.js';
import { GatewayClient, type GatewayOptions } from './gateway-client.js';
import { gatewayFetch, startLocalGateway, Substitutes, type GatewayHandle } from './gateway.js';
import { untilApproved, type GetSecretOptions } from './approval.js';

/** A secret value: text secrets as strings, binary ones as bytes (treat as read-only). */
export type SecretValue = string | Uint8Array;

export interface AgentOptions {
  /** `http://HOST:PORT` of the broker (TCP); or give `transport`. */
  readonly brokerUrl?: string;
  /** How to reach the broker: vsock through the parent in production, TCP or Unix socket in tests. */
  readonly transport?: Transport;
  /** The broker's public JWK (GET /v1/broker-key), pinned: answers signed by any other key are refused. */
  readonly brokerKey: JWK;
  /** The Nitro Security Module (/dev/nsm, or the simulator in tests and `--dev`). */
  readonly nsm: Nsm;
  /** Fraction of the TTL after which a cache hit starts a background refresh. Default 0.75. */
  readonly refreshAhead?: number;
  /** Per broker request. Default 10 s. */
  readonly timeoutMs?: number;
  /** Monotonic milliseconds; tests move it. Default performance.now. */
  readonly clock?: () => number;
  /** Wall-clock milliseconds, to judge an answer's iat/exp. Default Date.now. */
  readonly wallClock?: () => number;
  /** How far the broker's clock may be from this enclave's for `iat`. Default 60 s. */
  readonly maxClockSkewMs?: number;
  /** A sub-agent: the delegation token its parent obtained (`agent.delegate`), presented with every request. */
  readonly delegation?: string;
  /** The broker's credential gateway (inject bindings): its transport and pinned key. Needed by gateway() and fetch(). */
  readonly gateway?: GatewayOptions;
}

export interface AgentStats {
  hits: number;
  misses: number;
  attestations: number;
  backgroundRefreshes: number;
  backgroundFailures: number;
  lastBackgroundError: AgentError | undefined;
}

/** In-enclave client: `getSecret(name)` from a short-TTL cache that re-attests when it expires. */
export interface SecretAgent {
  /** `options`: how long to wait for human approval (a secret bound with --approval); see GetSecretOptions. */
  getSecret(name: string, options?: GetSecretOptions): Promise<SecretValue>;
  getSecrets(names: readonly string[], options?: GetSecretOptions): Promise<Record<string, SecretValue>>;
  /** Asks the broker (with a fresh attestation) for a delegation of some of this agent's secrets to a sub-agent. */
  delegate(options: DelegateOptions): Promise<Delegation>;
  /** Who delegated `token` (verified with the pinned broker key); with `expected`, PARENT_MISMATCH unless the parent has these measurements. */
  parentOf(token: string, expected?: { readonly pcrs: MeasurementValues }): Promise<DelegationParent>;
  /**
   * Credential substitution: a local HTTP endpoint (127.0.0.1, random port) an unmodified SDK can use as
   * its base URL (`gw.url(name)`), with `gw.substitute(name)` as its API key; the broker adds the real one.
   */
  gateway(): Promise<GatewayHandle>;
  /** One call to credential `name`'s upstream through the broker's gateway; gateway refusals throw AgentError. */
  fetch(name: string, path: string, init?: RequestInit): Promise<Response>;
  readonly stats: Readonly<AgentStats>;
  close(): Promise<void>;
}

interface Entry {
  readonly value: SecretValue;
  readonly version: number;
  readonly refreshAt: number;
  readonly expiresAt: number;
}

/** What one request sent: answers are accepted only if bound to exactly this. */
interface SentRequest {
  readonly nonceHex: string;
  readonly document: SentDocument;
  /** Monotonic and wall-clock time when the request began. */
  readonly started: number;
  readonly startedWall: number;
}

/**
 * Highest version accepted per secret, for the whole process (every agent
 * pinning the same broker key shares it): a relay cannot roll a secret back
 * by steering a second agent, or a recreated one, to an old answer.
 */
const versionFloors = new Map<string, VersionFloor>();

const generateRsa = promisify(generateKeyPair);
const utf8 = new TextDecoder('utf-8', { fatal: true });

function transportFor(options: AgentOptions): Transport {
  if (options.transport) return options.transport;
  if (!options.brokerUrl) throw new TypeError('createAgent needs brokerUrl or transport');
  const url = new URL(options.brokerUrl);
  if (url.protocol !== 'http:') throw new TypeError('brokerUrl must be http:// (answers are end-to-end encrypted and signed; TLS belongs to the forwarder)');
  // The URL parser has checked the authority already; parseHostPort drops an IPv6 address's brackets.
  const address = parseHostPort(`${url.hostname}:${url.port || 80}`);
  if (!address) throw new TypeError(`brokerUrl "${options.brokerUrl}" has no usable host and port`);
  return tcpTransport(address.host, address.port);
}

/**
 * Creates an agent with one ephemeral RSA-2048 key pair for this process; the
 * private key never leaves memory and is never exported.
 */
export async function createAgent(options: AgentOptions): Promise<SecretAgent> {
  const { privateKey, publicKey } = await generateRsa('rsa', { modulusLength: 2048 });
  const spki = new Uint8Array(publicKey.export({ format: 'der', type: 'spki' }));
  const brokerKey = await importJWK(options.brokerKey, 'EdDSA');
  // The same key as a KeyObject, for checking released items synchronously (release-envelope.ts).
  const brokerVerifyKey = createPublicKey({ key: options.brokerKey as JsonWebKey, format: 'jwk' });
  const thumbprint = await calculateJwkThumbprint(options.brokerKey, 'sha256');
  let floor = versionFloors.get(thumbprint);
  if (!floor) versionFloors.set(thumbprint, (floor = new VersionFloor()));
  return new Agent(options, privateKey, spki, brokerKey, brokerVerifyKey, transportFor(options), floor);
}

class Agent implements SecretAgent {
  readonly stats: AgentStats = { hits: 0, misses: 0, attestations: 0, backgroundRefreshes: 0, backgroundFailures: 0, lastBackgroundError: undefined };
  readonly #cache = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<Map<string, Entry>>>();
  readonly #http: BrokerHttp;
  readonly #clock: () => number;
  readonly #wallClock: () => number;
  readonly #maxClockSkewMs: number;
  readonly #refreshAhead: number;
  #closed = false;
  #gateway: { client: GatewayClient; substitutes: Substitutes; local?: Promise<GatewayHandle> } | undefined;

  constructor(
    private readonly options: AgentOptions,
    private readonly privateKey: KeyObject,
    private readonly spki: Uint8Array,
    private readonly brokerKey: Awaited<ReturnType<typeof importJWK>>,
    private readonly brokerVerifyKey: KeyObject,
    transport: Transport,
    private readonly versionFloor: VersionFloor,
  ) {
    this.#http = new BrokerHttp(transport, options.timeoutMs ?? 10_000);
    this.#clock = options.clock ?? (() => performance.now());
    this.#wallClock = options.wallClock ?? Date.now;
    this.#maxClockSkewMs = options.maxClockSkewMs ?? DEFAULT_MAX_CLOCK_SKEW_MS;
    this.#refreshAhead = options.refreshAhead ?? 0.75;
  }

  /**
   * The cached entry if still within its TTL, counting the hit and starting
   * a background refresh once past the refresh point; undefined otherwise.
   */
  #fresh(name: string, now: number): Entry | undefined {
    const entry = this.#closed ? undefined : this.#cache.get(name);
    if (entry === undefined || now >= entry.expiresAt) return undefined;
    this.stats.hits++;
    if (now >= entry.refreshAt && !this.#inflight.has(name)) this.#refreshInBackground(name);
    return entry;
  }

  async getSecret(name: string, options: GetSecretOptions = {}): Promise<SecretValue> {
    const entry = this.#fresh(name, this.#clock());
    if (entry !== undefined) return entry.value;
    this.stats.misses++;
    return (await untilApproved(() => this.#load([name]), options, this.#clock, () => this.#closed)).get(name)!.value;
  }

  async getSecrets(names: readonly string[], options: GetSecretOptions = {}): Promise<Record<string, SecretValue>> {
    const now = this.#clock();
    const out: Record<string, SecretValue> = {};
    const missing: string[] = [];
    for (const name of names) {
      const entry = this.#fresh(name, now);
      if (entry !== undefined) out[name] = entry.value;
      else missing.push(name);
    }
    if (missing.length) {
      this.stats.misses += missing.length;
      const loaded = await untilApproved(() => this.#load(missing), options, this.#clock, () => this.#closed);
      for (const name of missing) out[name] = loaded.get(name)!.value;
    }
    return out;
  }

  #refreshInBackground(name: string): void {
    this.stats.backgroundRefreshes++;
    this.#load([name]).catch((err: unknown) => {
      // The cached value keeps being served until its hard expiry; the next call after that reports the failure.
      this.stats.backgroundFailures++;
      this.stats.lastBackgroundError = err instanceof AgentError ? err : new AgentError('BAD_RESPONSE', String(err));
    });
  }

  /** Single flight: names already being fetched join that request; the rest share one new attestation. */
  async #load(names: readonly string[]): Promise<Map<string, Entry>> {
    if (this.#closed) throw new AgentError('AGENT_CLOSED', 'the agent is closed');
    const waits: Array<Promise<Map<string, Entry>>> = [];
    const fresh = [...new Set(names)].filter((n) => {
      const pending = this.#inflight.get(n);
      if (pending) waits.push(pending);
      return !pending;
    });
    if (fresh.length) {
      const batch = this.#fetch(fresh).finally(() => {
        for (const n of fresh) if (this.#inflight.get(n) === batch) this.#inflight.delete(n);
      });
      for (const n of fresh) this.#inflight.set(n, batch);
      waits.push(batch);
    }
    const merged = new Map<string, Entry>();
    for (const result of await Promise.all(waits)) for (const [k, v] of result) merged.set(k, v);
    return merged;
  }

  async #fetch(names: readonly string[]): Promise<Map<string, Entry>> {
    const started = this.#clock();
    const startedWall = this.#wallClock();
    const challenge = await this.#http.call('GET', '/v1/challenge');
    const nonceB64 = (challenge.json as { [K in keyof ChallengeAnswer]?: unknown } | null)?.nonce;
    if (challenge.status !== 200 || typeof nonceB64 !== 'string') throw this.#brokerError(challenge, 'challenge');
    const nonce = Buffer.from(nonceB64, 'base64');
    if (nonce.length !== CHALLENGE_NONCE_BYTES) throw new AgentError('BAD_RESPONSE', `broker challenge is not ${CHALLENGE_NONCE_BYTES} bytes`);

    let document: Uint8Array;
    try {
      document = await this.options.nsm.attest({ nonce, publicKey: this.spki });
      this.stats.attestations++;
    } catch (cause) {
      throw new AgentError('NSM_ERROR', `the NSM could not attest: ${cause instanceof NsmError ? cause.message : String(cause)}`, { cause });
    }

    // The answer must be bound to this exact document: the challenge reply is unauthenticated, so a relay can replay an old nonce.
    const sent: SentRequest = { nonceHex: nonce.toString('hex'), document: sentDocument(document), started, startedWall };
    const delegation = this.options.delegation === undefined ? {} : { delegation: this.options.delegation };
    const res = await this.#http.call('POST', '/v1/secrets', { attestation: Buffer.from(document).toString('base64'), names, ...delegation });
    const items = receivedItems(res.json);
    if (res.status !== 200 || !items) throw this.#brokerError(res, 'secrets');
    const out = new Map<string, Entry>();
    for (const name of names) {
      const matches = items.filter((i) => i.name === name);
      if (matches.length !== 1) throw new AgentError('BAD_RESPONSE', `broker answer has ${matches.length} items for "${name}"`);
      const entry = await this.#open(name, matches[0]!, sent);
      out.set(name, entry);
    }
    // close() may have run while this request was in flight: the values are wiped, never returned or cached.
    if (this.#closed) {
      for (const e of out.values()) if (e.value instanceof Uint8Array) e.value.fill(0);
      throw new AgentError('AGENT_CLOSED', 'the agent was closed while the request was in flight');
    }
    // Versions only go forward. Checked for the whole batch and raised in one synchronous step, so nothing interleaves.
    for (const [name, entry] of out) {
      const problem = this.versionFloor.check(name, entry.version);
      if (problem) {
        for (const e of out.values()) if (e.value instanceof Uint8Array) e.value.fill(0);
        throw new AgentError(problem.code, problem.message);
      }
    }
    for (const [name, entry] of out) {
      this.versionFloor.raise(name, entry.version);
      this.#cache.set(name, entry);
    }
    return out;
  }

  /** Opens the (unsigned) item received for `name`: believed only as far as its signed claims confirm it. */
  async #open(name: string, item: ReceivedItem, sent: SentRequest): Promise<Entry> {
    if (typeof item.jwe !== 'string') throw new AgentError('BAD_RESPONSE', `item "${name}" has no jwe`);
    let payload: unknown;
    try {
      // RSA-OAEP-256 + A256GCM around an EdDSA JWS, opened with node:crypto in one synchronous step (no threadpool hops).
      payload = JSON.parse(new TextDecoder().decode(openReleaseEnvelope(item.jwe, this.privateKey, this.brokerVerifyKey))) as unknown;
    } catch (cause) {
      throw new AgentError('UNTRUSTED_RESPONSE', `item "${name}" does not decrypt for this enclave or is not signed by the pinned broker key`, { cause });
    }
    // The signed claims must answer exactly this request, now (see broker/protocol for each check and its code).
    const nowWall = this.#wallClock();
    const now = this.#clock();
    const check = checkReleaseClaims(payload, {
      name,
      labelledVersion: item.version,
      nonceHex: sent.nonceHex,
      documentSha256: sent.document.sha256,
      moduleId: sent.document.moduleId,
      requestStartedAtMs: sent.startedWall,
      nowMs: nowWall,
      maxClockSkewMs: this.#maxClockSkewMs,
    });
    if (!check.ok) throw new AgentError(check.code, check.message);
    const claims: SignedReleaseClaims = check.claims;
    const bytes = 'cms' in claims ? this.#unwrapRecipient(name, claims.cms) : new Uint8Array(Buffer.from(claims.val, 'base64url'));
    let value: SecretValue = bytes;
    if (claims.text === true) {
      try {
        value = utf8.decode(bytes);
      } catch {
        throw new AgentError('BAD_RESPONSE', `item "${name}" is marked text but is not UTF-8`);
      }
      bytes.fill(0);
    }
    // TTLs run on this enclave's monotonic clock from when the request began, and never past exp on its wall clock.
    const lifetimeMs = Math.min(claims.ttl * 1000, now + (claims.exp * 1000 - nowWall) - sent.started);
    return { value, version: claims.ver, refreshAt: sent.started + lifetimeMs * this.#refreshAhead, expiresAt: sent.started + lifetimeMs };
  }

  /** Mode kms-recipient: the value as KMS encrypted it to this enclave's key, decrypted here and nowhere else. */
  #unwrapRecipient(name: string, cms: string): Uint8Array {
    try {
      return decryptRecipientEnvelope(new Uint8Array(Buffer.from(cms, 'base64url')), this.privateKey);
    } catch (err) {
      if (err instanceof CmsError) throw new AgentError(err.code, `item "${name}": ${err.message}`, { cause: err });
      throw err;
    }
  }

  #brokerError(res: { status: number; json: unknown }, what: string): AgentError {
    // Error bodies are unauthenticated (any relay can write one): only the broker's own codes pass through,
    // never one of the agent's verdicts, and the message cannot carry control characters into logs.
    const err = (res.json as { error?: { [K in keyof ErrorAnswer['error']]?: unknown } } | null)?.error;
    if (!isBrokerErrorCode(err?.code)) return new AgentError('BAD_RESPONSE', `unexpected ${what} answer (HTTP ${res.status})`);
    const message = typeof err.message === 'string' ? err.message.slice(0, 300).replace(/[\u0000-\u001f\u007f]/g, ' ') : `broker refused (${err.code})`;
    return new AgentError(err.code, message);
  }

  async delegate(options: DelegateOptions): Promise<Delegation> {
    if (this.#closed) throw new AgentError('AGENT_CLOSED', 'the agent is closed');
    this.stats.attestations++;
    return requestDelegation(this.#http, this.options.nsm, this.spki, this.brokerKey, options, this.options.delegation, this.#wallClock, this.#maxClockSkewMs);
  }

  parentOf(token: string, expected?: { readonly pcrs: MeasurementValues }): Promise<DelegationParent> {
    return parentOfToken(token, this.brokerKey, expected);
  }

  #gatewayParts(): { client: GatewayClient; substitutes: Substitutes; local?: Promise<GatewayHandle> } {
    if (this.#closed) throw new AgentError('AGENT_CLOSED', 'the agent is closed');
    if (!this.options.gateway) throw new AgentError('GATEWAY_NOT_CONFIGURED', 'createAgent was given no gateway options (transport and pinned key)');
    this.#gateway ??= { client: new GatewayClient(this.options.gateway, this.options.nsm, this.#clock), substitutes: new Substitutes() };
    return this.#gateway;
  }

  async gateway(): Promise<GatewayHandle> {
    const parts = this.#gatewayParts();
    parts.local ??= startLocalGateway(parts.client, parts.substitutes);
    return parts.local;
  }

  async fetch(name: string, path: string, init?: RequestInit): Promise<Response> {
    const parts = this.#gatewayParts();
    return gatewayFetch(parts.client, parts.substitutes, name, path, init);
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#gateway) {
      this.#gateway.client.close();
      await (await this.#gateway.local?.catch(() => undefined))?.close();
    }
    this.#http.close();
    for (const entry of this.#cache.values()) if (entry.value instanceof Uint8Array) entry.value.fill(0);
    this.#cache.clear();
  }
}
