import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { startBroker, type RunningBroker } from '../broker/broker.js';
import { resolveConfig, type BrokerConfig } from '../broker/config.js';
import { AdminError, bindSecret, pcrSet, revokeSecret } from '../broker/admin.js';
import type { AllowRule } from '../broker/policy/types.js';
import { createAgent, type AgentOptions, type SecretAgent } from '../enclave-agent/agent.js';
import { NsmSimulator } from '../vsock-shim/simulator/nsm-simulator.js';
import type { PcrValues } from '../lib/pcrs.js';

/** Where a kit's broker log lines go (`fields` never hold secret values). */
export type TestKitLogger = (level: 'info' | 'warn' | 'error', message: string, fields: Readonly<Record<string, unknown>>) => void;

/** Options of {@link startTestKit}. Every field is optional: `startTestKit()` is the usual call. */
export interface TestKitOptions {
  /**
   * PCRs of the simulated enclave, index -> lower-case hex, laid over
   * {@link devPcrs} (so `{ 0: ... }` changes only PCR0). Default: `devPcrs()`.
   */
  readonly pcrs?: PcrValues;
  /** EC2 instance id the simulated enclave runs on (module id and PCR4). */
  readonly instanceId?: string;
  /**
   * Where the simulator's one-line "development PKI, not AWS" warning goes.
   * Default: stderr. Pass `() => {}` to silence it.
   */
  readonly warn?: (message: string) => void;
  /** The broker's log lines (start-up, decisions). Default: none. */
  readonly log?: TestKitLogger;
}

/** Options of {@link TestKit.bind}. */
export interface TestBindOptions {
  /**
   * The measurements allowed to read the secret: PCR0, PCR1 and PCR2, and
   * optionally 3, 4 and 8 (the PCRs a binding may pin). Default: PCR0/1/2 of
   * the kit's simulator (its "image"), as a production binding pins an
   * enclave image. Give other values to test a refusal (`POLICY_DENIED`).
   */
  readonly pcrs?: PcrValues;
  /** How long an agent may cache the value, in seconds (1 to the broker's maximum). Default: the previous version's, else 60. */
  readonly ttlSeconds?: number;
}

/**
 * DEVELOPMENT ONLY. An in-process keygate broker on 127.0.0.1 that trusts
 * the root of its own NSM simulator (and AWS's), with its bindings store,
 * keys and audit log in a fresh temporary directory. Nothing it holds is
 * protected: use it in test suites, never for real secrets.
 */
export interface TestKit {
  /** `http://127.0.0.1:PORT` of the kit's broker (a free port picked at start). */
  readonly brokerUrl: string;
  /** The broker's public signing key (JWK), for {@link AgentOptions.brokerKey}. */
  readonly brokerKey: JWK;
  /** The simulated Nitro Security Module the kit's agents attest with. Its root is trusted by this kit's broker only. */
  readonly simulator: NsmSimulator;
  /** The PCRs the simulator's attestation documents carry, index -> hex. */
  readonly pcrs: PcrValues;
  /** The broker's hash-chained audit log (JSON lines): one record per decision. Removed by {@link TestKit.close}. */
  readonly auditFile: string;
  /**
   * Binds `value` to `name` (creating the secret, or replacing its value and
   * rules with a new version), encrypted with the broker's local key
   * provider. As with `keygate bind`, a value that is valid UTF-8 comes back
   * from `getSecret` as a string, any other as bytes.
   * Rejects with an error whose `code` is `ADMIN_REFUSED` for an invalid name
   * (`[A-Za-z0-9._-]`, up to 128), an empty value, one over 64 KiB, or
   * `options.pcrs` that a binding cannot hold (see {@link TestBindOptions.pcrs}).
   */
  bind(name: string, value: string | Uint8Array, options?: TestBindOptions): Promise<void>;
  /**
   * Revokes `name`: the broker releases it to nobody (agents get
   * `POLICY_DENIED`; the audit records `SECRET_REVOKED`) until it is bound
   * again. An agent keeps a value it already holds until its TTL ends.
   */
  revoke(name: string): Promise<void>;
  /**
   * What `createAgent` from `keygate/agent` needs to reach this kit's broker
   * from the simulated enclave: for application code that creates its own
   * agent. `overrides` replace fields (e.g. `nsm` of another simulator).
   */
  agentOptions(overrides?: Partial<AgentOptions>): AgentOptions;
  /** `createAgent(kit.agentOptions(overrides))`; the agent is closed by {@link TestKit.close}. */
  agent(overrides?: Partial<AgentOptions>): Promise<SecretAgent>;
  /** Closes the agents it created, the broker and the simulator, and removes the temporary directory. Safe to call twice. */
  close(): Promise<void>;
}

const LOCAL_PROVIDER = 'local';
// Production abuse limits would make an application's suite flaky: many agents of one identity fetching within
// a second, or a few deliberate refusals quarantining the simulated enclave for the tests after them. keygate's own
// test brokers (test/support/broker.ts) use the same settings. Not part of keygate/testing's API (index.ts).
export const NO_RATE_LIMITS: BrokerConfig['rateLimits'] = {
  perClientPerSecond: 0,
  perIdentityPerSecond: 0,
  perSecretPerSecond: 0,
  quarantineAfterDenials: 0,
  quarantineWindowSeconds: 60,
  quarantineSeconds: 60,
};

/** PCR0/1/2: what a binding pins to name an enclave image. */
function imagePcrs(pcrs: PcrValues): PcrValues {
  return { 0: pcrs[0], 1: pcrs[1], 2: pcrs[2] };
}

/**
 * DEVELOPMENT ONLY. Starts a {@link TestKit}: an NSM simulator with a fresh
 * development PKI, and a broker trusting it on a random port of 127.0.0.1,
 * with its store, keys and audit log in a new directory under the OS
 * temporary directory (nothing is written to the current directory). Abuse
 * limits (rate limits, quarantine) are off. Each kit is independent: kits in
 * parallel test files share nothing.
 *
 * @example
 * const kit = await startTestKit();
 * await kit.bind('db-password', 'hunter2');
 * const agent = await kit.agent();
 * await agent.getSecret('db-password'); // 'hunter2'
 * await kit.close();
 */
export async function startTestKit(options: TestKitOptions = {}): Promise<TestKit> {
  const dir = await mkdtemp(join(tmpdir(), 'keygate-testkit-'));
  let simulator: NsmSimulator | undefined;
  let broker: RunningBroker | undefined;
  try {
    simulator = await NsmSimulator.create({
      ...(options.pcrs ? { pcrs: options.pcrs } : {}),
      ...(options.instanceId ? { instanceId: options.instanceId } : {}),
      ...(options.warn ? { warn: options.warn } : {}),
    });
    const log = options.log;
    const auditFile = join(dir, 'state', 'audit.jsonl');
    broker = await startBroker(
      resolveConfig({
        listen: '127.0.0.1:0',
        store: join(dir, 'store'),
        stateDir: join(dir, 'state'),
        auditFile,
        extraRootPems: [simulator.rootPem],
        rateLimits: NO_RATE_LIMITS,
        dev: true,
      }),
      { log: log ? (level, message, fields) => log(level, message, fields ?? {}) : () => {} },
    );
    const brokerKey: JWK = { ...broker.signingKey.publicJwk };
    return new Kit(dir, simulator, broker, brokerKey, auditFile);
  } catch (err) {
    await broker?.close().catch(() => {});
    await simulator?.close();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/** One allow rule; a PCR set a binding cannot hold is refused like every other bad binding (ADMIN_REFUSED). */
function rule(pcrs: PcrValues): AllowRule {
  try {
    return pcrSet(pcrs);
  } catch (err) {
    throw new AdminError(`options.pcrs: ${(err as Error).message}`, { cause: err });
  }
}

class Kit implements TestKit {
  readonly brokerUrl: string;
  readonly pcrs: PcrValues;
  readonly #agents = new Set<SecretAgent>();
  #closing: Promise<void> | undefined;

  constructor(
    readonly dir: string,
    readonly simulator: NsmSimulator,
    private readonly broker: RunningBroker,
    readonly brokerKey: JWK,
    readonly auditFile: string,
  ) {
    this.brokerUrl = broker.url;
    this.pcrs = simulator.pcrs;
  }

  async bind(name: string, value: string | Uint8Array, options: TestBindOptions = {}): Promise<void> {
    const provider = this.broker.providers.get(LOCAL_PROVIDER);
    if (!provider) throw new Error('the kit broker has no local key provider');
    const bytes = typeof value === 'string' ? new TextEncoder().encode(value) : value;
    await bindSecret(this.broker.store, provider, {
      secret: name,
      value: bytes,
      allow: [rule(options.pcrs ?? imagePcrs(this.pcrs))],
      provider: LOCAL_PROVIDER,
      ...(options.ttlSeconds !== undefined ? { ttlSeconds: options.ttlSeconds } : {}),
    });
  }

  async revoke(name: string): Promise<void> {
    await revokeSecret(this.broker.store, name);
  }

  agentOptions(overrides: Partial<AgentOptions> = {}): AgentOptions {
    return { brokerUrl: this.brokerUrl, brokerKey: this.brokerKey, nsm: this.simulator.client(), ...overrides };
  }

  async agent(overrides: Partial<AgentOptions> = {}): Promise<SecretAgent> {
    const agent = await createAgent(this.agentOptions(overrides));
    this.#agents.add(agent);
    return agent;
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const agent of this.#agents) await agent.close();
      await this.broker.close();
      await this.simulator.close();
      await rm(this.dir, { recursive: true, force: true });
    })();
    return this.#closing;
  }
}
