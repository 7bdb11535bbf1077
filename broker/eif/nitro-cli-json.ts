import { SHA384_HEX, type ImagePcrs } from '../../lib/pcrs.js';
import { EifError } from './format.js';

/**
 * PCRs from `nitro-cli build-enclave` or `nitro-cli describe-eif` output:
 * both carry `"Measurements": { "HashAlgorithm": ..., "PCR0": hex, ... }`.
 */
export function measurementsFromNitroCli(json: unknown): ImagePcrs {
  const m = (json as { Measurements?: unknown } | null)?.Measurements as Record<string, unknown> | undefined;
  if (!m || typeof m !== 'object') throw new EifError('no "Measurements" object: not nitro-cli build-enclave or describe-eif output');
  if (m.HashAlgorithm !== undefined && !/^sha384/i.test(String(m.HashAlgorithm))) throw new EifError(`unsupported hash algorithm ${String(m.HashAlgorithm)}`);
  const pcr = (i: number): string | undefined => {
    const v = m[`PCR${i}`];
    if (v === undefined) return undefined;
    // nitro-cli prints lower case; upper case is accepted and normalised.
    if (typeof v !== 'string' || !SHA384_HEX.test(v.toLowerCase())) throw new EifError(`PCR${i} is not 48 bytes of hex`);
    return v.toLowerCase();
  };
  const [p0, p1, p2, p8] = [pcr(0), pcr(1), pcr(2), pcr(8)];
  if (!p0 || !p1 || !p2) throw new EifError('PCR0, PCR1 and PCR2 are required');
  return { '0': p0, '1': p1, '2': p2, ...(p8 ? { '8': p8 } : {}) };
}
