/**
 * A test broker whose aws-kms provider talks to the KMS-protocol test server
 * (the real AWS SDK over HTTP on 127.0.0.1), with a test enclave pointed at it
 * and the broker's public key: the set-up of the suites that release secrets
 * through KMS.
 */
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import type { BrokerConfig } from '../../broker/config.js';
import type { AwsKmsSettings } from '../../broker/kms/aws-kms.js';
import { startTestBroker } from './broker.js';
import { TestEnclave } from './enclave.js';
import { TEST_CREDENTIALS, startKmsServer, type KmsTestServer } from './kms-server.js';
import type { TestPki } from './pki.js';

export interface KmsBroker {
  readonly kms: KmsTestServer;
  readonly broker: RunningBroker;
  /** The broker's public key as served on /v1/broker-key. */
  readonly brokerJwk: JWK;
  /** An enclave of `pki` with the approved identity, talking to the broker. */
  readonly enclave: TestEnclave;
  /** Closes the broker, then the KMS server. */
  close(): Promise<void>;
}

/**
 * Starts the KMS test server and a test broker (store and state under `dir`,
 * trusting `pki`'s root) using it with a 15 s budget per KMS call; `kms` adds
 * to those KMS settings, `extra` to the broker's config.
 */
export async function startKmsBroker(dir: string, pki: TestPki, kms: Partial<AwsKmsSettings> = {}, extra: Partial<BrokerConfig> = {}): Promise<KmsBroker> {
  const server = await startKmsServer();
  let broker: RunningBroker;
  try {
    broker = await startTestBroker(dir, [pki.root.pem], {
      kms: { region: 'us-east-1', endpoint: server.endpoint, credentials: TEST_CREDENTIALS, requestTimeoutMs: 15_000, ...kms },
      ...extra,
    });
  } catch (err) {
    await server.close();
    throw err;
  }
  const brokerJwk = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
  return {
    kms: server,
    broker,
    brokerJwk,
    enclave: new TestEnclave(pki, broker.url),
    close: async () => {
      await broker.close();
      await server.close();
    },
  };
}
