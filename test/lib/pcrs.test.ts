import { describe, expect, it } from 'vitest';
import { differingPcrs, IMAGE_PCRS, PCR_HEX, pcrsFromDocument, pcrsInclude, samePcrs, SHA384_HEX, type PcrValues } from '../../lib/pcrs.js';

const h = (byte: number, bytes = 48): string => byte.toString(16).padStart(2, '0').repeat(bytes);

describe('lib/pcrs: the one PCR vocabulary', () => {
  it('pcrsFromDocument turns the verifier byte view into index -> lower-case hex, all or only the indexes asked for (those present)', () => {
    const backing = new Uint8Array(64).fill(0xab);
    const raw = new Map<number, Uint8Array>([
      [4, new Uint8Array(48).fill(0x44)],
      [0, new Uint8Array(48).fill(0x0f)],
      [2, backing.subarray(8, 56)],
    ]);
    const all = pcrsFromDocument(raw);
    expect(all).toEqual({ 0: h(0x0f), 2: h(0xab), 4: h(0x44) });
    expect(Object.keys(all)).toEqual(['0', '2', '4']);
    expect(JSON.stringify(pcrsFromDocument(raw, [0, 1, 2, 4]))).toBe(`{"0":"${h(0x0f)}","2":"${h(0xab)}","4":"${h(0x44)}"}`);
    expect(pcrsFromDocument(raw, [8])).toEqual({});
  });

  it('pcrsInclude: every PCR a rule names must be equal; samePcrs: both name the same PCRs', () => {
    const enclave: PcrValues = { 0: h(1), 1: h(2), 2: h(3), 4: h(4) };
    expect(pcrsInclude(enclave, { 0: h(1), 1: h(2), 2: h(3) })).toBe(true);
    expect(pcrsInclude(enclave, { 0: h(1), 1: h(2), 2: h(9) })).toBe(false);
    expect(pcrsInclude(enclave, { 0: h(1), 8: h(8) })).toBe(false);
    expect(pcrsInclude(enclave, {})).toBe(true);
    expect(samePcrs({ 0: h(1), 8: h(8) }, { 8: h(8), 0: h(1) })).toBe(true);
    expect(samePcrs({ 0: h(1) }, { 0: h(1), 8: h(8) })).toBe(false);
    expect(samePcrs({ 0: h(1), 8: undefined }, { 0: h(1) })).toBe(true);
  });

  it('differingPcrs lists the indexes that differ, a missing PCR differing from a present one', () => {
    expect(differingPcrs({ 0: h(1), 1: h(2), 2: h(3) }, { 0: h(1), 1: h(7), 2: h(3), 8: h(8) }, IMAGE_PCRS)).toEqual([1, 8]);
    expect(differingPcrs({ 0: h(1), 1: h(2), 2: h(3) }, { 0: h(1), 1: h(2), 2: h(3) }, IMAGE_PCRS)).toEqual([]);
  });

  it.each([
    [h(1, 32), true, false],
    [h(1, 48), true, true],
    [h(1, 64), true, false],
    [h(1, 48).toUpperCase().replace(/1/g, 'A'), false, false],
    [h(1, 47), false, false],
    [`0x${h(1, 47)}`, false, false],
    [`${h(1, 48)}\n`, false, false],
    ['', false, false],
  ])('hex validators: %s -> PCR_HEX %s, SHA384_HEX %s', (text, pcr, sha384) => {
    expect(PCR_HEX.test(text)).toBe(pcr);
    expect(SHA384_HEX.test(text)).toBe(sha384);
  });
});
