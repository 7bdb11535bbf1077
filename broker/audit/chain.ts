import { sign, type KeyObject } from 'node:crypto';
import { CodedError } from '../../lib/coded-error.js';
import { sha256Hex } from '../verify/bytes.js';

/**
 * The audit record chain, independent of where it is stored (a file, a
 * DynamoDB table, an S3 archive): every record is one JSON line carrying
 * `seq` and `prevHash` (the SHA-256 of the line before it), and each write
 * batch ends with a seal line whose Ed25519 signature covers its own
 * position and the hash of everything before it. Pure functions: the file
 * log, the DynamoDB sink and every verifier share them.
 */

/** prevHash of the first record of the file log's chain. */
export const GENESIS_HASH = '0'.repeat(64);

/** SHA-256 of one log line (without its newline), as its UTF-8 bytes: what the next line's prevHash must equal. */
export function lineHash(line: string): string {
  return sha256Hex(line);
}

/** The exact bytes a seal signs: its own position and the hash of everything before it. */
export function sealInput(seq: number, prevHash: string): Buffer {
  return Buffer.from(`keygate/audit/seal/v1\n${seq}\n${prevHash}`, 'utf8');
}

/** Where a chain stands: the last durable line's seq and hash (0 and the genesis hash when empty). */
export interface ChainHead {
  readonly seq: number;
  readonly prevHash: string;
}

/** The key seals are made with; `kid` names it in every seal. */
export interface AuditSigner {
  readonly key: KeyObject;
  readonly kid: string;
}

/** A batch chained after a head: its lines (no newlines) and the head after its seal. */
export interface ChainedBatch {
  readonly lines: readonly string[];
  readonly head: ChainHead;
}

/** Chains `bodies` after `head` and appends a seal signed by `signer`. */
export function chainBatch(head: ChainHead, bodies: ReadonlyArray<Record<string, unknown>>, signer: AuditSigner): ChainedBatch {
  let seq = head.seq;
  let prevHash = head.prevHash;
  const lines: string[] = [];
  const add = (body: Record<string, unknown>): void => {
    seq += 1;
    const line = JSON.stringify({ seq, prevHash, ...body });
    prevHash = lineHash(line);
    lines.push(line);
  };
  for (const body of bodies) add(body);
  const sig = sign(null, sealInput(seq + 1, prevHash), signer.key).toString('base64url');
  add({ type: 'seal', kid: signer.kid, sig });
  return { lines, head: { seq, prevHash } };
}

/**
 * prevHash of the first record of a chain kept in a shared store: derived
 * from the chain's id, so a chain copied under another id (or records moved
 * between chains) does not verify.
 */
export function chainGenesis(chainId: string): string {
  return sha256Hex(`keygate/audit/chain/v1\n${chainId}`);
}

/** A chain id: a replica's name in the shared audit table (and in S3 keys). */
export const CHAIN_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** One chain of a shared audit store, as listed. */
export interface ChainSummary {
  readonly id: string;
  /** The chain's durable head as its item records it. */
  readonly head: ChainHead;
  /** When the process now writing the chain started it (or took it over), as its head records it. */
  readonly started?: string;
}

/** Reads the chains of a shared audit store (the DynamoDB table): what verifiers and the S3 export consume. */
export interface AuditChainReader {
  /** Every chain, by id. */
  listChains(): Promise<ChainSummary[]>;
  /** The chain's lines in seq order, starting after `afterSeq` (default 0: from the first). */
  readLines(chainId: string, afterSeq?: number): AsyncIterable<string>;
  /**
   * The id of every chain that holds records, whether or not its head item
   * exists (a key-only scan): records without a head are a chain whose head
   * was deleted. A reader that cannot tell leaves it out; verifiers then skip
   * that check.
   */
  listRecordChains?(): Promise<string[]>;
  close(): void;
}

/** The audit store could not be read, or holds an item (or an answer) this code did not write. */
export class AuditChainReadError extends CodedError<'AUDIT_CHAINS_UNREADABLE' | 'AUDIT_CHAIN_MALFORMED'> {
  override readonly name = 'AuditChainReadError';
}
