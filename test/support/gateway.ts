/** A broker with its credential gateway, an NSM simulator and a loopback HTTPS upstream (test CA), for gateway tests and the bench. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import type { BrokerConfig } from '../../broker/config.js';
import type { GatewaySettings } from '../../broker/gateway/settings.js';
import type { InjectRule } from '../../broker/policy/types.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { tcpTransport } from '../../vsock-shim/transport/transport.js';
import { createAgent, type AgentOptions, type SecretAgent } from '../../enclave-agent/index.js';
import { NO_RATE_LIMITS, startTestBroker } from './broker.js';
import { startBroker } from '../../broker/broker.js';
import { resolveConfig } from '../../broker/config.js';
import { silentLogger } from '../../broker/log.js';
import { loopbackCa, selfSigned, type TlsPair } from './tls.js';

export interface GatewayFixture {
  readonly dir: string;
  readonly simulator: NsmSimulator;
  readonly broker: RunningBroker;
  readonly brokerKey: JWK;
  readonly gatewayTls: TlsPair;
  readonly gatewayPort: number;
  readonly upstream: Server;
  readonly upstreamOrigin: string;
  /** The credential header of every request the upstream got. */
  readonly seen: Array<string | undefined>;
  /** Binds `name` as an inject binding for the simulator's PCRs. */
  bind(name: string, value: string, inject?: Partial<InjectRule>): Promise<void>;
  /** An agent with the gateway pinned, reaching it through `port` (default: the gateway itself; e.g. a relay). */
  agent(port?: number, extra?: Partial<AgentOptions>): Promise<SecretAgent>;
  close(): Promise<void>;
}

/** The upstream answers every request with a small JSON body, at once. */
export async function startGatewayFixture(extra: Partial<BrokerConfig> = {}, gatewayExtra: Partial<GatewaySettings> = {}, brokerClock?: () => number): Promise<GatewayFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'keygate-gwfx-'));
  const simulator = await NsmSimulator.create({ warn: () => {} });
  const { caPem, server } = await loopbackCa();
  const gatewayTls = await selfSigned();
  writeFileSync(join(dir, 'gw.crt'), gatewayTls.certPem);
  writeFileSync(join(dir, 'gw.key'), gatewayTls.keyPem);
  writeFileSync(join(dir, 'upstream-ca.pem'), caPem);
  const seen: Array<string | undefined> = [];
  const upstream = createServer({ cert: server.certPem, key: server.keyPem, keepAliveTimeout: 30_000 }, (req, res) => {
    seen.push(req.headers.authorization);
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"ok":true}');
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  const upstreamOrigin = `https://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  const config: Partial<BrokerConfig> = { ...extra, gateway: { listen: '127.0.0.1:0', certFile: join(dir, 'gw.crt'), keyFile: join(dir, 'gw.key'), upstreamCaFile: join(dir, 'upstream-ca.pem'), ...gatewayExtra } };
  const broker = brokerClock
    ? await startBroker(resolveConfig({ listen: '127.0.0.1:0', store: join(dir, 'store'), stateDir: join(dir, 'state'), extraRootPems: [simulator.rootPem], rateLimits: NO_RATE_LIMITS, ...config }), { log: silentLogger, clock: brokerClock })
    : await startTestBroker(dir, [simulator.rootPem], config);
  const gatewayPort = Number(new URL(broker.gatewayUrl!).port);
  const brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
  const p = simulator.pcrs;
  const allow = [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })];
  const agents: SecretAgent[] = [];
  return {
    dir, simulator, broker, brokerKey, gatewayTls, gatewayPort, upstream, upstreamOrigin, seen,
    bind: async (name, value, inject = {}) => {
      await bindSecret(broker.store, broker.providers.get('local')!, {
        secret: name, value: new TextEncoder().encode(value), allow, provider: 'local',
        inject: { upstream: upstreamOrigin, header: 'authorization', template: 'Bearer {value}', routes: ['POST /v1/*', 'GET /v1/*'], maxBodyBytes: 65_536, budget: { requests: 1_000_000, windowSeconds: 60 }, ...inject },
      });
    },
    agent: async (port = gatewayPort, more = {}) => {
      const a = await createAgent({ brokerUrl: broker.url, brokerKey, nsm: simulator.client(), gateway: { transport: tcpTransport('127.0.0.1', port), spkiSha256: gatewayTls.spkiSha256, timeoutMs: 30_000 }, ...more });
      agents.push(a);
      return a;
    },
    close: async () => {
      for (const a of agents) await a.close();
      await broker.close();
      upstream.closeAllConnections();
      await new Promise<void>((r) => upstream.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
