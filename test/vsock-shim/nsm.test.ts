import { describe, expect, it } from 'vitest';
import { Encoder } from 'cbor-x';
import { NsmError, decodeRequest, decodeResponse, encodeRequest, encodeResponse } from '../../vsock-shim/nsm/messages.js';
import { NsmSimulator, devPcrs } from '../../vsock-shim/simulator/nsm-simulator.js';
import { verifyAttestation } from '../../index.js';
import { expectedPcr4, instanceIdOf } from '../../broker/policy/decide.js';
import { parseTransport, TransportError } from '../../vsock-shim/transport/transport.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('NSM messages', () => {
  it('encodes requests in serde external tagging, byte for byte', () => {
    // {"Attestation": {"user_data": null, "nonce": h'0102', "public_key": null}}
    expect(hex(encodeRequest({ Attestation: { userData: null, nonce: Uint8Array.of(1, 2), publicKey: null } }))).toBe(
      'a16b4174746573746174696f6ea369757365725f64617461f6656e6f6e636542010' + '26a7075626c69635f6b6579f6',
    );
    expect(hex(encodeRequest('GetRandom'))).toBe('694765745261' + '6e646f6d');
    expect(hex(encodeRequest({ DescribePCR: { index: 16 } }))).toBe('a16b446573637269626550435' + '2a165696e64657810');
  });

  it('round-trips requests and responses', () => {
    const req = { Attestation: { userData: Uint8Array.of(9), nonce: null, publicKey: new Uint8Array(294) } } as const;
    expect(decodeRequest(encodeRequest(req))).toEqual(req);
    expect(decodeResponse(encodeResponse({ kind: 'Attestation', document: Uint8Array.of(1, 2, 3) }))).toEqual({ kind: 'Attestation', document: Uint8Array.of(1, 2, 3) });
    expect(decodeResponse(encodeResponse({ kind: 'DescribePCR', lock: true, data: new Uint8Array(48) }))).toMatchObject({ kind: 'DescribePCR', lock: true });
    expect(decodeResponse(encodeResponse({ kind: 'Error', error: 'InvalidIndex' }))).toEqual({ kind: 'Error', error: 'InvalidIndex' });
  });

  it('enforces the NSM size limits before anything is sent', () => {
    const big = new Uint8Array(1025);
    expect(() => encodeRequest({ Attestation: { userData: big, nonce: null, publicKey: null } })).toThrow(NsmError);
    expect(() => encodeRequest({ Attestation: { userData: new Uint8Array(1024), nonce: new Uint8Array(1024), publicKey: new Uint8Array(1024) } })).not.toThrow();
    expect(() => encodeRequest({ DescribePCR: { index: 70_000 } })).toThrow(NsmError);
  });

  it.each([
    ['not CBOR', Uint8Array.of(0xff)],
    ['a number', Uint8Array.of(0x01)],
    ['unknown variant', new Uint8Array(new Encoder({ useRecords: false }).encode({ Frobnicate: {} }))],
    ['document not bytes', new Uint8Array(new Encoder({ useRecords: false }).encode({ Attestation: { document: 'x' } }))],
  ])('rejects a malformed response: %s', (_name, bytes) => {
    expect(() => decodeResponse(bytes)).toThrow(NsmError);
  });
});

describe('NSM simulator', () => {
  it('answers through the same client code as /dev/nsm, with AWS-shaped documents', async () => {
    const sim = await NsmSimulator.create({ warn: () => {} });
    const nsm = sim.client();
    const doc = verifyAttestation(await nsm.attest({ nonce: Uint8Array.of(7), publicKey: Uint8Array.of(1), userData: null }), { at: Date.now(), roots: [sim.rootPem] });
    expect(doc.nonce).toEqual(Uint8Array.of(7));
    expect(doc.userData).toBeNull();
    expect(doc.cabundle).toHaveLength(4);
    expect(hex(doc.pcrs.get(0)!)).toBe(devPcrs()[0]);
    expect(hex(doc.pcrs.get(4)!)).toBe(expectedPcr4(instanceIdOf(doc.moduleId)!));
    expect(doc.debug).toBe(false);
    expect((await nsm.describePcr(2)).data).toEqual(doc.pcrs.get(2));
    expect((await nsm.getRandom()).length).toBe(256);
    await expect(nsm.describePcr(40)).rejects.toMatchObject({ code: 'NSM_ERROR' });
    expect(decodeResponse(await sim.exchange(Uint8Array.of(0xff)))).toEqual({ kind: 'Error', error: 'InvalidArgument' });
    await nsm.close();
    await expect(nsm.getRandom()).rejects.toMatchObject({ code: 'NSM_UNAVAILABLE' });
  });

  it('is never trusted by default', async () => {
    const sim = await NsmSimulator.create({ warn: () => {} });
    const bytes = await sim.client().attest({});
    expect(() => verifyAttestation(bytes, { at: Date.now() })).toThrow(expect.objectContaining({ code: 'UNTRUSTED_ROOT' }));
  });

  it('prints a loud warning and simulates debug mode', async () => {
    const lines: string[] = [];
    const sim = await NsmSimulator.create({ warn: (m) => lines.push(m), debug: true });
    expect(lines.join('')).toMatch(/NSM SIMULATOR.*not by AWS/);
    const doc = verifyAttestation(await sim.client().attest({}), { at: Date.now(), roots: [sim.rootPem], allowDebug: true });
    expect(doc.debug).toBe(true);
  });

  it('rolls its leaf before the 3-hour certificate expires', async () => {
    let now = Date.now();
    const sim = await NsmSimulator.create({ warn: () => {}, clock: () => now });
    const first = verifyAttestation(await sim.client().attest({}), { at: now, roots: [sim.rootPem] });
    now += 4 * 3_600_000;
    const later = verifyAttestation(await sim.client().attest({}), { at: now, roots: [sim.rootPem] });
    expect(later.signingCertificate.sha256).not.toBe(first.signingCertificate.sha256);
  });
});

describe('transport specs', () => {
  it('parses tcp, unix and vsock', () => {
    expect(parseTransport('tcp:127.0.0.1:8443').description).toBe('127.0.0.1:8443');
    expect(parseTransport('tcp:[::1]:8443').description).toBe('[::1]:8443');
    expect(parseTransport('unix:/run/keygate.sock').description).toBe('localhost');
    expect(parseTransport('vsock:3:8000', () => { throw new Error('never connected here'); }).description).toBe('vsock-3-8000');
  });
  it.each(['tcp:host', 'tcp:h:0', 'tcp:h:70000', 'unix:', 'vsock:3', 'vsock:99999999999:1', 'http://x'])('rejects %s', (spec) => {
    expect(() => parseTransport(spec, () => { throw new Error('never'); })).toThrow(TransportError);
  });
  it('vsock needs the addon connector', () => {
    expect(() => parseTransport('vsock:3:8000')).toThrow(expect.objectContaining({ code: 'TRANSPORT_UNAVAILABLE' }));
  });
});
