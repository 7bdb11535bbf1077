import { NsmError, decodeResponse, encodeRequest, type NsmRequest, type NsmResponse } from './messages.js';

/** Moves one encoded request to the NSM and returns its encoded answer (ioctl, or the simulator). */
export interface NsmTransport {
  exchange(request: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

export interface AttestationInput {
  readonly nonce?: Uint8Array | null;
  readonly publicKey?: Uint8Array | null;
  readonly userData?: Uint8Array | null;
}

/** What the enclave agent needs from the Nitro Security Module. */
export interface Nsm {
  /** A fresh attestation document (COSE_Sign1 bytes) carrying these fields. */
  attest(input: AttestationInput): Promise<Uint8Array>;
  describePcr(index: number): Promise<{ lock: boolean; data: Uint8Array }>;
  getRandom(): Promise<Uint8Array>;
  close(): Promise<void>;
}

function expect<K extends NsmResponse['kind']>(response: NsmResponse, kind: K): Extract<NsmResponse, { kind: K }> {
  if (response.kind === 'Error') throw new NsmError('NSM_ERROR', `NSM refused the request: ${response.error}`);
  if (response.kind !== kind) throw new NsmError('NSM_PROTOCOL', `NSM answered ${response.kind} to a ${kind} request`);
  return response as Extract<NsmResponse, { kind: K }>;
}

/** The NSM protocol over any transport: the same code talks to /dev/nsm and to the simulator. */
export class NsmClient implements Nsm {
  constructor(private readonly transport: NsmTransport) {}

  async #call(request: NsmRequest): Promise<NsmResponse> {
    return decodeResponse(await this.transport.exchange(encodeRequest(request)));
  }

  async attest(input: AttestationInput): Promise<Uint8Array> {
    const response = await this.#call({ Attestation: { userData: input.userData ?? null, nonce: input.nonce ?? null, publicKey: input.publicKey ?? null } });
    return expect(response, 'Attestation').document;
  }

  async describePcr(index: number): Promise<{ lock: boolean; data: Uint8Array }> {
    const r = expect(await this.#call({ DescribePCR: { index } }), 'DescribePCR');
    return { lock: r.lock, data: r.data };
  }

  async getRandom(): Promise<Uint8Array> {
    return expect(await this.#call('GetRandom'), 'GetRandom').random;
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}
