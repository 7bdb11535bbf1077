import { createHash, randomBytes, sign } from 'node:crypto';
import { Encoder } from 'cbor-x';
import { NsmClient, type NsmTransport } from '../nsm/client.js';
import { NsmError, decodeRequest, encodeResponse, type NsmRequest, type NsmResponse } from '../nsm/messages.js';
import { createTestPki, issueLeaf, type Issued, type TestPki } from './pki.js';
import { pcrsFromDocument, type PcrValues } from '../../lib/pcrs.js';

export interface SimulatorOptions {
  /** PCR index -> hex; unspecified PCRs of 0..15 are zero except the dev defaults for 0-4. */
  readonly pcrs?: PcrValues;
  /** Simulate `--debug-mode`: PCR0/1/2 are zero. */
  readonly debug?: boolean;
  readonly instanceId?: string;
  /** Wall clock in ms (tests move it). */
  readonly clock?: () => number;
  /** Where the loud warning goes. Default: stderr. */
  readonly warn?: (message: string) => void;
  /** Reuse this PKI (another simulated enclave under the same development root). */
  readonly pki?: TestPki;
}

const ZERO48 = new Uint8Array(48);
const sha384 = (...parts: Array<string | Uint8Array>): string => {
  const h = createHash('sha384');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};

/** PCR values of the simulated development enclave image. */
export function devPcrs(instanceId = 'i-0de0000000000000a'): PcrValues {
  return {
    0: sha384('keygate development enclave image'),
    1: sha384('keygate development kernel and boot ramfs'),
    2: sha384('keygate development application'),
    3: sha384(ZERO48, 'arn:aws:iam::000000000000:role/keygate-dev'),
    4: sha384(ZERO48, instanceId),
  };
}

const encoder = new Encoder({ useRecords: false, tagUint8Array: false, mapsAsObjects: false, variableMapSize: true });
const PROTECTED_ES384 = Uint8Array.of(0xa1, 0x01, 0x38, 0x22);

/**
 * Implements the NSM's wire protocol in process, signing attestation
 * documents with a generated PKI shaped like AWS's (root, regional, zonal,
 * instance CA, 3-hour leaf). Documents verify only where its root is
 * explicitly trusted: the broker does that only in `--dev`.
 */
export class NsmSimulator implements NsmTransport {
  readonly #pki: TestPki;
  #leaf: Issued;
  readonly #pcrs: Map<number, Uint8Array>;
  readonly #moduleId: string;
  readonly #clock: () => number;
  #closed = false;

  private constructor(pki: TestPki, pcrs: Map<number, Uint8Array>, moduleId: string, clock: () => number) {
    this.#pki = pki;
    this.#leaf = pki.leaf;
    this.#pcrs = pcrs;
    this.#moduleId = moduleId;
    this.#clock = clock;
  }

  /** Generates the simulator's PKI (a few P-384 keys) and prints the warning. */
  static async create(options: SimulatorOptions = {}): Promise<NsmSimulator> {
    const clock = options.clock ?? Date.now;
    const instanceId = options.instanceId ?? 'i-0de0000000000000a';
    const zero = '00'.repeat(48);
    const values: PcrValues = { ...devPcrs(instanceId), ...options.pcrs, ...(options.debug ? { 0: zero, 1: zero, 2: zero } : {}) };
    const pcrs = new Map<number, Uint8Array>();
    for (let i = 0; i < 16; i++) pcrs.set(i, values[i] ? Buffer.from(values[i]!, 'hex') : new Uint8Array(48));
    for (const [i, v] of Object.entries(values)) if (v !== undefined) pcrs.set(Number(i), Buffer.from(v, 'hex'));
    const pki = options.pki ?? (await createTestPki(clock()));
    (options.warn ?? ((m: string) => process.stderr.write(`${m}\n`)))(
      '*** NSM SIMULATOR: attestation documents are signed by a development PKI, not by AWS. Never trust its root in production. ***',
    );
    return new NsmSimulator(pki, pcrs, `${instanceId}-enc${randomBytes(8).toString('hex')}`, clock);
  }

  /** Another simulated enclave (other PCRs, debug mode, instance) under the same development root. */
  async sibling(options: Omit<SimulatorOptions, 'pki'> = {}): Promise<NsmSimulator> {
    return NsmSimulator.create({ clock: this.#clock, warn: () => {}, ...options, pki: this.#pki });
  }

  /** PEM of the simulator's root: what `--dev` brokers trust. */
  get rootPem(): string {
    return this.#pki.root.pem;
  }

  get moduleId(): string {
    return this.#moduleId;
  }

  /** The PCRs documents carry, index -> hex. */
  get pcrs(): PcrValues {
    return pcrsFromDocument(this.#pcrs);
  }

  /** An NSM client speaking to this simulator, as the agent would to /dev/nsm. */
  client(): NsmClient {
    return new NsmClient(this);
  }

  async exchange(request: Uint8Array): Promise<Uint8Array> {
    if (this.#closed) throw new NsmError('NSM_UNAVAILABLE', 'simulator is closed');
    let decoded: NsmRequest;
    try {
      decoded = decodeRequest(request);
    } catch {
      return encodeResponse({ kind: 'Error', error: 'InvalidArgument' });
    }
    return encodeResponse(await this.#handle(decoded));
  }

  async #handle(request: NsmRequest): Promise<NsmResponse> {
    if (request === 'GetRandom') return { kind: 'GetRandom', random: randomBytes(256) };
    if (request === 'DescribeNSM') return { kind: 'DescribeNSM', info: { version_major: 1, version_minor: 0, module_id: this.#moduleId, max_pcrs: 32, locked_pcrs: [0, 1, 2, 3, 4, 8], digest: 'SHA384' } };
    if ('DescribePCR' in request) {
      const data = this.#pcrs.get(request.DescribePCR.index);
      if (!data) return { kind: 'Error', error: 'InvalidIndex' };
      return { kind: 'DescribePCR', lock: request.DescribePCR.index < 16, data };
    }
    return { kind: 'Attestation', document: await this.#attest(request.Attestation) };
  }

  async #attest(fields: { userData: Uint8Array | null; nonce: Uint8Array | null; publicKey: Uint8Array | null }): Promise<Uint8Array> {
    const now = this.#clock();
    // Like the real NSM, keep one leaf for hours and roll it before it expires.
    if (now > this.#leaf.cert.notAfter.getTime() - 60_000 || now < this.#leaf.cert.notBefore.getTime()) {
      this.#leaf = await issueLeaf({ ...this.#pki, at: now });
    }
    const opt = (v: Uint8Array | null): Buffer | null => (v ? Buffer.from(v) : null);
    const payload = encoder.encode(
      new Map<string, unknown>([
        ['module_id', this.#moduleId],
        ['digest', 'SHA384'],
        ['timestamp', BigInt(now)],
        ['pcrs', new Map([...this.#pcrs].map(([i, v]) => [i, Buffer.from(v)]))],
        ['certificate', Buffer.from(this.#leaf.der)],
        ['cabundle', this.#pki.cabundle.map((c) => Buffer.from(c))],
        ['public_key', opt(fields.publicKey)],
        ['user_data', opt(fields.userData)],
        ['nonce', opt(fields.nonce)],
      ]),
    );
    const toSign = encoder.encode(['Signature1', Buffer.from(PROTECTED_ES384), Buffer.alloc(0), payload]);
    const signature = sign('sha384', toSign, { key: this.#leaf.privateKey, dsaEncoding: 'ieee-p1363' });
    return new Uint8Array(encoder.encode([Buffer.from(PROTECTED_ES384), new Map(), payload, signature]));
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
