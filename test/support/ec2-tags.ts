/**
 * The set-up of the instance-binding-by-EC2-tag tests: moto_server with an EC2 client and an image to launch,
 * the test PKI, brokers whose tag lookups go to EC2, bindings restricted by tag, and requests from enclaves whose
 * documents name a moto instance (module_id and PCR4, as a Nitro enclave's do).
 */
import { afterAll, beforeAll } from 'vitest';
import { DescribeImagesCommand, EC2Client, RunInstancesCommand } from '@aws-sdk/client-ec2';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import type { RunningBroker } from '../../broker/broker.js';
import { expectedPcr4 } from '../../broker/policy/decide.js';
import { startTestBroker } from './broker.js';
import { APPROVED, TestEnclave, buildPcrs, type EnclaveResponse } from './enclave.js';
import { awsOf, startMoto, type Moto } from './moto.js';
import { createTestPki, type TestPki } from './pki.js';

export interface Ec2TagFixture {
  /** Set once the file's tests run (inside tests and hooks). */
  readonly moto: Moto;
  readonly ec2: EC2Client;
  readonly pki: TestPki;
  /** `close` runs after the file's tests (last registered first), before EC2 and moto stop. */
  onClose(close: () => unknown): void;
  /** A moto instance carrying `tags`; its id. */
  instance(tags?: Record<string, string>): Promise<string>;
  /** A broker (abuse limits off) whose tag lookups use `ec2Settings`; `dir` holds its store and state. Closed by the fixture. */
  broker(ec2Settings: Record<string, unknown>, dir?: string): Promise<{ broker: RunningBroker; dir: string }>;
  /** Binds `secret` (value `${secret}-value`) to the approved test build, restricted to instances tagged key=value. */
  bindTagged(b: RunningBroker, secret: string, key: string, value: string): Promise<void>;
  /** The client flow from an enclave whose document says module_id `moduleId` and PCR4 = the measurement of `pcr4For`. */
  requestAs(b: RunningBroker, moduleId: string, pcr4For: string, names: string[]): Promise<EnclaveResponse>;
  /** The client flow from an enclave on `instanceId` (module_id names it; PCR4 names `pcr4For`, by default the same). */
  requestFrom(b: RunningBroker, instanceId: string, names: string[], pcr4For?: string): Promise<EnclaveResponse>;
}

/**
 * Call at the top of a test file (after its `tempDirs`, so the directories outlive the brokers): registers the
 * hooks that start moto and the PKI before the file's tests and close everything after them.
 */
export function ec2TagFixture(tempDir: () => string): Ec2TagFixture {
  let moto: Moto | undefined;
  let ec2: EC2Client | undefined;
  let pki: TestPki | undefined;
  let imageId = '';
  const closers: Array<() => unknown> = [];
  beforeAll(async () => {
    [moto, pki] = await Promise.all([startMoto(), createTestPki(Date.now())]);
    ec2 = new EC2Client(awsOf(moto));
    imageId = (await ec2.send(new DescribeImagesCommand({}))).Images![0]!.ImageId!;
  }, 120_000);
  afterAll(async () => {
    for (const close of closers.reverse()) await close();
    ec2?.destroy();
    await moto?.stop();
  });
  const started = <T>(value: T | undefined, name: string): T => {
    if (value === undefined) throw new Error(`${name} is not started yet: use it inside a test or hook`);
    return value;
  };
  const fixture: Ec2TagFixture = {
    get moto() {
      return started(moto, 'moto');
    },
    get ec2() {
      return started(ec2, 'the EC2 client');
    },
    get pki() {
      return started(pki, 'the test PKI');
    },
    onClose: (close) => void closers.push(close),
    instance: async (tags = {}) => {
      const entries = Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
      const out = await fixture.ec2.send(
        new RunInstancesCommand({ ImageId: imageId, MinCount: 1, MaxCount: 1, ...(entries.length ? { TagSpecifications: [{ ResourceType: 'instance', Tags: entries }] } : {}) }),
      );
      return out.Instances![0]!.InstanceId!;
    },
    broker: async (ec2Settings, dir = tempDir()) => {
      const b = await startTestBroker(dir, [fixture.pki.root.pem], { ec2: { requestTimeoutMs: 20_000, maxAttempts: 1, ...ec2Settings } });
      closers.push(() => b.close());
      return { broker: b, dir };
    },
    bindTagged: async (b, secret, key, value) => {
      await bindSecret(b.store, b.providers.get('local')!, { secret, value: Buffer.from(`${secret}-value`), allow: [pcrSet(APPROVED)], provider: 'local', instanceTag: { key, value } });
    },
    requestAs: (b, moduleId, pcr4For, names) => {
      const pcrs = buildPcrs();
      pcrs.set(4, Buffer.from(expectedPcr4(pcr4For), 'hex'));
      return new TestEnclave(fixture.pki, b.url, pcrs).request(names, { moduleId });
    },
    requestFrom: (b, instanceId, names, pcr4For = instanceId) => fixture.requestAs(b, `${instanceId}-enc0123456789abcdef`, pcr4For, names),
  };
  return fixture;
}
