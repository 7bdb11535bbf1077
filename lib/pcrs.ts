/**
 * The one vocabulary for PCR values outside the verifier: a plain object,
 * PCR index -> lower-case hex. It is JSON as it stands (bindings, baselines,
 * audit records and CLI output store it unchanged, keys "0".."31"), and the
 * policy compares hex strings. The verifier keeps the raw document view
 * (`ReadonlyMap<number, Uint8Array>`: it imports nothing from the project);
 * `pcrsFromDocument` converts that view, once, at the boundary.
 *
 * A leaf module (no imports), so the broker, the NSM simulator and tests share it.
 */

/** PCR index -> lower-case hex. `I` narrows the indexes (those a binding may pin, those the audit keeps). */
export type PcrValues<I extends number = number> = Readonly<Partial<Record<I, string>>>;

/** What measuring an image gives (EIF, nitro-cli output, a recorded baseline): PCR0/1/2 always, PCR8 for a signed image. */
export type ImagePcrs = Readonly<Record<0 | 1 | 2, string>> & PcrValues<8>;

/** The PCRs an image measurement records (and a rebuild check compares), in order. */
export const IMAGE_PCRS = [0, 1, 2, 8] as const;

/** A PCR value of any bank Nitro uses (SHA-256, SHA-384 or SHA-512), lower-case hex. */
export const PCR_HEX = /^(?:[0-9a-f]{64}|[0-9a-f]{96}|[0-9a-f]{128})$/;

/** A SHA-384 digest (a Nitro PCR as the hypervisor extends it, an EIF's file hash), lower-case hex. */
export const SHA384_HEX = /^[0-9a-f]{96}$/;

/** The byte lengths a PCR may have: SHA-256, SHA-384, SHA-512. */
export const PCR_BYTE_LENGTHS: readonly number[] = [32, 48, 64];

/**
 * A verified document's PCRs (the verifier's byte view) as lower-case hex,
 * all of them or only `indexes` (those present, in that order).
 */
export function pcrsFromDocument<I extends number = number>(raw: ReadonlyMap<number, Uint8Array>, indexes?: readonly I[]): PcrValues<I> {
  const out: Partial<Record<number, string>> = {};
  for (const index of indexes ?? raw.keys()) {
    const bytes = raw.get(index);
    if (bytes !== undefined) out[index] = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
  }
  return out;
}

/** True when every PCR `required` names has that value in `actual` (a rule matching an enclave). */
export function pcrsInclude(actual: PcrValues, required: PcrValues): boolean {
  return Object.entries(required).every(([index, hex]) => actual[Number(index)] === hex);
}

/** True when both name the same PCRs with the same values. */
export function samePcrs(a: PcrValues, b: PcrValues): boolean {
  return pcrsInclude(a, b) && pcrsInclude(b, a);
}

/** The indexes among `indexes` whose values differ between `a` and `b` (a missing PCR differs from a present one). */
export function differingPcrs<I extends number>(a: PcrValues<I>, b: PcrValues<I>, indexes: readonly I[]): I[] {
  return indexes.filter((i) => a[i] !== b[i]);
}
