/**
 * Audit chains in memory behind the AuditChainReader interface (what the
 * DynamoDB audit table implements), built with the real chain format
 * (chainBatch: every batch ends in a signed seal), for archive tests.
 * `lines` is open to tests so they can edit or delete records "in the table".
 */
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chainBatch, chainGenesis, type AuditChainReader, type AuditSigner, type ChainHead, type ChainSummary } from '../../broker/audit/chain.js';

export interface TestAuditKey {
  readonly signer: AuditSigner;
  readonly publicKey: KeyObject;
}

export function testAuditKey(kid = 'test-audit'): TestAuditKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { signer: { key: privateKey, kid }, publicKey };
}

/** `n` decision records (a batch's bodies). */
export function decisions(n: number, tag = 'r'): Array<Record<string, unknown>> {
  return Array.from({ length: n }, (_, i) => ({ type: 'decision', decision: 'release', secret: `${tag}-${i}` }));
}

export class MemoryChainReader implements AuditChainReader {
  readonly chains = new Map<string, { lines: string[]; head: ChainHead }>();

  constructor(readonly signer: AuditSigner) {}

  /** Chains of sealed batches: `batches[chain]` lists the batch sizes; batch i of a chain holds decisions tagged `${chain}-${i}`. */
  static withBatches(signer: AuditSigner, batches: Record<string, number[]>): MemoryChainReader {
    const reader = new MemoryChainReader(signer);
    for (const [chain, sizes] of Object.entries(batches)) for (const [i, n] of sizes.entries()) reader.append(chain, decisions(n, `${chain}-${i}`));
    return reader;
  }

  /** Appends one batch (sealed) to a chain, creating the chain at its genesis. */
  append(chainId: string, bodies: ReadonlyArray<Record<string, unknown>>, signer: AuditSigner = this.signer): void {
    const chain = this.chains.get(chainId) ?? { lines: [], head: { seq: 0, prevHash: chainGenesis(chainId) } };
    const batch = chainBatch(chain.head, bodies, signer);
    this.chains.set(chainId, { lines: [...chain.lines, ...batch.lines], head: batch.head });
  }

  async listChains(): Promise<ChainSummary[]> {
    return [...this.chains].map(([id, c]) => ({ id, head: c.head }));
  }

  async *readLines(chainId: string, afterSeq = 0): AsyncIterable<string> {
    for (const line of this.chains.get(chainId)?.lines ?? []) {
      if ((JSON.parse(line) as { seq: number }).seq > afterSeq) yield line;
    }
  }

  close(): void {}
}
