/**
 * The audit table's layout: one chain per replica, fixed (the broker's sink,
 * the verifier and the S3 export all read it). Pure: no AWS SDK here.
 *
 * Key schema: `pk` (S, HASH) + `sk` (S, RANGE).
 * - Chain head and registry: pk = `chains`, sk = `<chainId>`; `seq` (N, the
 *   last durable line's seq), `prevHash` (S, that line's hash), `kid` (S),
 *   `owner` (S, the writing process's random token), `started` (S, ISO time),
 *   `checked` (S, ISO time: the last write probe of a sink recovering from a failure).
 * - Records: pk = `chain#<chainId>`, sk = seq zero-padded to 12 digits;
 *   `line` (S, the exact JSON line chainBatch made, as in the file log).
 * A chain's first prevHash is chainGenesis(chainId).
 */

export const AUDIT_PK = 'pk';
export const AUDIT_SK = 'sk';

/** Partition key of the chain head items (the chain registry). */
export const CHAINS_PK = 'chains';

/** Attributes of a chain head item. */
export const HEAD_ATTRIBUTES = { seq: 'seq', prevHash: 'prevHash', kid: 'kid', owner: 'owner', started: 'started', checked: 'checked' } as const;

/** Attribute of a record item holding its line. */
export const LINE_ATTRIBUTE = 'line';

/** Digits of a record's sort key: seq zero-padded, so string order is seq order. */
export const SEQ_DIGITS = 12;

/** Key of chain `chainId`'s head item. */
export function headKey(chainId: string): { pk: string; sk: string } {
  return { pk: CHAINS_PK, sk: chainId };
}

/** Partition key of chain `chainId`'s records. */
export function chainPartition(chainId: string): string {
  return `chain#${chainId}`;
}

/** Sort key of the record with sequence number `seq`. */
export function seqSortKey(seq: number): string {
  if (!Number.isSafeInteger(seq) || seq < 0 || seq >= 10 ** SEQ_DIGITS) throw new RangeError(`audit seq ${seq} out of range`);
  return String(seq).padStart(SEQ_DIGITS, '0');
}

/** Key of chain `chainId`'s record `seq`. */
export function recordKey(chainId: string, seq: number): { pk: string; sk: string } {
  return { pk: chainPartition(chainId), sk: seqSortKey(seq) };
}
