import type { KeyObject } from 'node:crypto';
import { CodedError } from '../../lib/coded-error.js';
import { AuditChainReadError, chainGenesis, type AuditChainReader, type ChainHead } from './chain.js';
import { AuditChainVerifier, type AuditVerification } from './verify-log.js';

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
  /** When the process writing the chain started it, as its head records it (an old, still empty chain is worth a look). */
  readonly started?: string;
}

export interface ChainsVerification {
  /** True only when at least one chain holds records, every chain verified, and no records are without a head. */
  readonly ok: boolean;
  readonly chains: readonly ChainVerification[];
  /** Chains whose records are in the store but whose head item is not: the head was deleted (tampering). */
  readonly orphans: readonly string[];
  /** Chains holding records that verified: 0 means nothing was verified, which is never reported intact. */
  readonly verifiedChains: number;
}

export interface VerifyChainsOptions {
  /** Check only the hash chains (no key). Must be asked for explicitly. */
  readonly allowUnsigned?: boolean;
}

/**
 * Verifies every chain of a shared audit store: each chain's records from its
 * own genesis (so a chain copied under another id, or records moved between
 * chains, fail), and the head item against the last record. A head ahead of
 * the records means acknowledged records were deleted at the tail; records
 * beyond the head were never acknowledged by any broker (records and head are
 * written in one transaction), so someone wrote them outside the broker or
 * rolled the head back: both are tampering. Records whose chain has no head
 * item (the head deleted) are tampering too.
 *
 * Lines are checked as they are read (constant memory whatever the chain's
 * length); reading stops at the first problem, or once the records pass the
 * head (which bounds what a table, or an endpoint, can make it read).
 *
 * What the table cannot show: a whole chain deleted (head and records), or a
 * chain's last batches deleted with its head moved back to a record that
 * remains (the shorter chain is consistent). Only an anchor outside the table
 * (the S3 archive, verify-archive) detects those.
 */
export async function verifyAuditChains(reader: AuditChainReader, publicKey: KeyObject | undefined, options: VerifyChainsOptions = {}): Promise<ChainsVerification> {
  const chains: ChainVerification[] = [];
  for (const { id, head, started } of await coded('listing the chains', () => reader.listChains())) {
    const genesis = chainGenesis(id);
    const verifier = new AuditChainVerifier(publicKey, { genesis, ...(options.allowUnsigned ? { allowUnsigned: true } : {}) });
    verifier.beginFile(id);
    await coded(`reading chain ${id}`, async () => {
      for await (const line of reader.readLines(id)) {
        // Stop at the first problem, or at the first record past the head: either is the finding.
        if (!verifier.push(line) || verifier.lines > head.seq) break;
      }
    });
    const records = verifier.finish();
    const empty = records.lines === 0 && records.problem?.kind === 'empty' && head.seq === 0 && head.prevHash === genesis;
    let headProblem: ChainVerification['headProblem'];
    // Compare only when the records themselves verified up to their end: otherwise the records' problem is the finding.
    const recordsIntact = records.ok || ['unsigned', 'empty', 'unsealed'].includes(records.problem?.kind ?? '');
    if (recordsIntact && !empty) {
      const lastSeq = records.lines;
      if (head.seq > lastSeq) {
        headProblem = { kind: 'head-ahead', message: `the head says ${head.seq} records are durable, the table holds ${lastSeq}: acknowledged records were deleted at the tail` };
      } else if (head.seq < lastSeq) {
        headProblem = { kind: 'records-beyond-head', message: `record(s) after the head (seq ${head.seq}): never acknowledged by a broker; written outside it, or the head was rolled back` };
      } else if (head.prevHash !== records.headHash) {
        headProblem = { kind: 'head-mismatch', message: `the head's hash does not match record ${head.seq}: the record or the head was edited` };
      }
    }
    const ok = empty || (records.ok && headProblem === undefined);
    chains.push({ id, head, ok, records, empty, ...(started ? { started } : {}), ...(headProblem ? { headProblem } : {}) });
  }
  const heads = new Set(chains.map((c) => c.id));
  const withRecords = reader.listRecordChains ? await coded('listing the record partitions', () => reader.listRecordChains!()) : [];
  const orphans = [...new Set(withRecords)].filter((id) => !heads.has(id)).sort();
  const verifiedChains = chains.filter((c) => c.ok && !c.empty).length;
  return { ok: verifiedChains > 0 && orphans.length === 0 && chains.every((c) => c.ok), chains, orphans, verifiedChains };
}

/** Runs `step`; an error without a code (a bug, a RangeError from an absurd item) becomes AUDIT_CHAIN_MALFORMED, never a bare crash. */
async function coded<T>(what: string, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    if (err instanceof CodedError) throw err;
    throw new AuditChainReadError('AUDIT_CHAIN_MALFORMED', `audit chains: ${what} failed (${(err as Error)?.name ?? 'Error'}: ${(err as Error)?.message ?? String(err)})`, { cause: err });
  }
}
