import type { KeyObject } from 'node:crypto';
import { chainGenesis, type AuditChainReader, type ChainHead } from './chain.js';
import { verifyAuditLogs, type AuditVerification } from './verify-log.js';

/** Why a chain's head item and its records disagree. */
export type ChainHeadProblem =
  /** The head says more records are durable than the table holds: records deleted at the tail (acknowledged ones). */
  | 'head-ahead'
  /** Records beyond the head: no broker transaction writes them (records and head move together), so they were written outside the broker, or the head was rolled back. */
  | 'records-beyond-head'
  /** Same seq, another hash: the last record or the head was edited. */
  | 'head-mismatch';

/** The outcome for one chain. */
export interface ChainVerification {
  readonly id: string;
  /** The head as its item records it. */
  readonly head: ChainHead;
  readonly ok: boolean;
  /** The records' verification (hash chain from chainGenesis(id), seals, signatures). */
  readonly records: AuditVerification;
  /** Set when the head item disagrees with the last record. */
  readonly headProblem?: { readonly kind: ChainHeadProblem; readonly message: string };
  /** A chain whose head is at its start and holds no records (a replica that never wrote): nothing to verify, not a failure. */
  readonly empty: boolean;
}

export interface ChainsVerification {
  /** True only when there is at least one chain and every chain verified. */
  readonly ok: boolean;
  readonly chains: readonly ChainVerification[];
}

export interface VerifyChainsOptions {
  /** Check only the hash chains (no key). Must be asked for explicitly. */
  readonly allowUnsigned?: boolean;
}

/**
 * Verifies every chain of a shared audit store: each chain's records with
 * verifyAuditLogs from its own genesis (so a chain copied under another id,
 * or records moved between chains, fail), and the head item against the last
 * record. A head ahead of the records means acknowledged records were
 * deleted at the tail; records beyond the head were never acknowledged by
 * any broker (records and head are written in one transaction), so someone
 * wrote them outside the broker or rolled the head back: both are tampering.
 * A chain reads whole into memory (one replica's chain between exports).
 */
export async function verifyAuditChains(reader: AuditChainReader, publicKey: KeyObject | undefined, options: VerifyChainsOptions = {}): Promise<ChainsVerification> {
  const chains: ChainVerification[] = [];
  for (const { id, head } of await reader.listChains()) {
    const lines: string[] = [];
    for await (const line of reader.readLines(id)) lines.push(line);
    const records = verifyAuditLogs([{ name: id, text: lines.length ? `${lines.join('\n')}\n` : '' }], publicKey, {
      genesis: chainGenesis(id),
      ...(options.allowUnsigned ? { allowUnsigned: true } : {}),
    });
    const genesis = chainGenesis(id);
    const empty = lines.length === 0 && head.seq === 0 && head.prevHash === genesis;
    let headProblem: ChainVerification['headProblem'];
    // Compare only when the records themselves verified up to their end: otherwise the records' problem is the finding.
    const recordsIntact = records.ok || ['unsigned', 'empty', 'unsealed'].includes(records.problem?.kind ?? '');
    if (recordsIntact && !empty) {
      const lastSeq = records.lines;
      if (head.seq > lastSeq) {
        headProblem = { kind: 'head-ahead', message: `the head says ${head.seq} records are durable, the table holds ${lastSeq}: acknowledged records were deleted at the tail` };
      } else if (head.seq < lastSeq) {
        headProblem = { kind: 'records-beyond-head', message: `${lastSeq - head.seq} record(s) after the head (seq ${head.seq}): never acknowledged by a broker; written outside it, or the head was rolled back` };
      } else if (head.prevHash !== records.headHash) {
        headProblem = { kind: 'head-mismatch', message: `the head's hash does not match record ${head.seq}: the record or the head was edited` };
      }
    }
    const ok = empty || (records.ok && headProblem === undefined);
    chains.push({ id, head, ok, records, empty, ...(headProblem ? { headProblem } : {}) });
  }
  return { ok: chains.length > 0 && chains.every((c) => c.ok), chains };
}
