/**
 * The set-up the enclave-agent suites share: the NSM simulator (the agent's
 * /dev/nsm) and a real test broker on 127.0.0.1 that trusts the simulator's
 * root, plus what a test needs to bind secrets to the simulated enclave and to
 * give its agent the broker's key.
 */
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { pcrSet } from '../../broker/admin.js';
import type { AllowRule } from '../../broker/policy/types.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { startTestBroker } from './broker.js';

export interface SimulatedBroker {
  readonly simulator: NsmSimulator;
  readonly broker: RunningBroker;
  /** Allows the simulator's identity (its PCR0, PCR1 and PCR2). */
  readonly allow: AllowRule[];
  /** The broker's public key as it serves it on /v1/broker-key (what the agent pins). */
  readonly brokerKey: JWK;
}

/**
 * Creates the simulator, then the broker via `start` (given the roots to trust;
 * default: startTestBroker with store and state under `dir`).
 */
export async function startSimulatedBroker(
  dir: string,
  start: (roots: string[]) => Promise<RunningBroker> = (roots) => startTestBroker(dir, roots),
): Promise<SimulatedBroker> {
  const simulator = await NsmSimulator.create({ warn: () => {} });
  const broker = await start([simulator.rootPem]);
  const p = simulator.pcrs;
  const allow = [pcrSet({ 0: p[0]!, 1: p[1]!, 2: p[2]! })];
  const brokerKey = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
  return { simulator, broker, allow, brokerKey };
}
