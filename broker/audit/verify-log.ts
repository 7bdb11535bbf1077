import { verify, type KeyObject } from 'node:crypto';
import { GENESIS_HASH, lineHash, sealInput } from './log.js';

/** The outcome of checking an audit log. */
export interface AuditVerification {
  readonly ok: boolean;
  /** Lines read. */
  readonly lines: number;
  readonly decisions: number;
  readonly seals: number;
  /** Sequence number of the last seal whose signature verified (0: none). */
  readonly lastSealedSeq: number;
  /** Hash of the last line: anchor it elsewhere to detect truncation later. */
  readonly headHash: string;
  /** Records after the last seal (written but not yet sealed, or a cut-off tail). */
  readonly unsealed: number;
  /** The first problem found, if any. */
  readonly problem?: { readonly line: number; readonly seq?: number; readonly message: string };
}

/**
 * Checks a JSONL audit log: every line parses, sequence numbers run 1, 2, 3
 * without gaps or reordering, each prevHash equals the SHA-256 of the line
 * before, and every seal's Ed25519 signature verifies under `publicKey`
 * (when given). Reports the first edited, dropped or reordered record.
 */
export function verifyAuditLog(text: string, publicKey?: KeyObject): AuditVerification {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  let prevHash = GENESIS_HASH;
  let decisions = 0;
  let seals = 0;
  let lastSealedSeq = 0;
  let sinceSeal = 0;
  const result = (problem?: AuditVerification['problem']): AuditVerification => ({
    ok: problem === undefined,
    lines: lines.length,
    decisions,
    seals,
    lastSealedSeq,
    headHash: prevHash,
    unsealed: sinceSeal,
    ...(problem ? { problem } : {}),
  });
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    const line = lines[i]!;
    let rec: { seq?: unknown; prevHash?: unknown; type?: unknown; sig?: unknown };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      return result({ line: lineNo, message: 'line is not valid JSON (edited or corrupted)' });
    }
    if (rec.seq !== lineNo) {
      const message =
        typeof rec.seq === 'number' && rec.seq > lineNo
          ? `sequence jumps from ${lineNo - 1} to ${rec.seq}: record(s) dropped`
          : `sequence ${String(rec.seq)} where ${lineNo} was expected: records reordered or duplicated`;
      return result({ line: lineNo, ...(typeof rec.seq === 'number' ? { seq: rec.seq } : {}), message });
    }
    if (rec.prevHash !== prevHash) {
      return result({ line: lineNo, seq: lineNo, message: `prevHash does not match line ${lineNo - 1}: line ${lineNo - 1} was edited, or this record was` });
    }
    if (rec.type === 'seal') {
      seals++;
      if (publicKey) {
        const ok = typeof rec.sig === 'string' && verify(null, sealInput(lineNo, prevHash), publicKey, Buffer.from(rec.sig, 'base64url'));
        if (!ok) return result({ line: lineNo, seq: lineNo, message: 'seal signature does not verify under the broker key' });
      }
      lastSealedSeq = lineNo;
      sinceSeal = 0;
    } else if (rec.type === 'decision') {
      decisions++;
      sinceSeal++;
    } else {
      return result({ line: lineNo, seq: lineNo, message: `unknown record type ${JSON.stringify(rec.type)}` });
    }
    prevHash = lineHash(line);
  }
  return result();
}
