import { verify, type KeyObject } from 'node:crypto';
import { GENESIS_HASH, lineHash, sealInput, type ChainHead } from './chain.js';

/** Why a log is not proven intact. `tampered` is an edit, drop or reordering; the others are states a verifier must not call intact. */
export type AuditProblemKind = 'tampered' | 'torn-tail' | 'unsealed' | 'empty' | 'unsigned';

/** The outcome of checking an audit log (one file, or a rotated set in chain order). */
export interface AuditVerification {
  /** True only when every record is covered by a seal whose signature verified (or signatures were explicitly waived). */
  readonly ok: boolean;
  /** Lines read (complete lines, all files). */
  readonly lines: number;
  readonly decisions: number;
  /** Periodic refusal-summary records. */
  readonly summaries: number;
  readonly seals: number;
  /** Whether seal signatures were checked. */
  readonly signaturesChecked: boolean;
  /** Sequence number of the last seal (whose signature verified, when checked; 0: none). */
  readonly lastSealedSeq: number;
  /** Hash of the last line: anchor it elsewhere to detect truncation later. */
  readonly headHash: string;
  /** Records after the last seal: not covered by any signature. */
  readonly unsealed: number;
  /** Files checked, in order. */
  readonly files: number;
  /** An incomplete last line (no newline): a write cut off by a crash or a full disk, never acknowledged. */
  readonly tornTail?: { readonly file?: string; readonly line: number; readonly bytes: number };
  /** The first problem found, if any. */
  readonly problem?: { readonly kind: AuditProblemKind; readonly file?: string; readonly line: number; readonly seq?: number; readonly message: string };
}

export interface AuditVerifyOptions {
  /** Accept a log whose seals were not checked (no key). Must be asked for explicitly. */
  readonly allowUnsigned?: boolean;
  /** prevHash of the chain's first record: GENESIS_HASH for a file log; a shared-store chain derives it from its id (chainGenesis). */
  readonly genesis?: string;
  /** Where the checked lines start: the last line before them (an archive checked from a later segment, a table read after an export). Default: the chain's start. */
  readonly from?: ChainHead;
}

/** One file of a log: a name for messages and its text. */
export interface AuditFileText {
  readonly name?: string;
  readonly text: string;
}

/** Checks one audit file from its first record. See {@link verifyAuditLogs}. */
export function verifyAuditLog(text: string, publicKey?: KeyObject, options: AuditVerifyOptions = {}): AuditVerification {
  return verifyAuditLogs([{ text }], publicKey, options);
}

/**
 * Checks a JSONL audit log split over files (rotated segments, then the live
 * file): every line parses, sequence numbers run 1, 2, 3 across the files
 * without gaps or reordering, each prevHash equals the SHA-256 of the line
 * before (across file boundaries), and every seal's Ed25519 signature
 * verifies under `publicKey`. Reports the first edited, dropped or reordered
 * record. It is `ok` only when, besides, the log is not empty, its last file
 * does not end in a torn line, no record follows the last seal, and the
 * signatures were checked (or `allowUnsigned` was given).
 */
export function verifyAuditLogs(files: readonly AuditFileText[], publicKey?: KeyObject, options: AuditVerifyOptions = {}): AuditVerification {
  let prevHash = options.from?.prevHash ?? options.genesis ?? GENESIS_HASH;
  let seq = options.from?.seq ?? 0;
  let lines = 0;
  let decisions = 0;
  let summaries = 0;
  let seals = 0;
  let lastSealedSeq = 0;
  let sinceSeal = 0;
  let tornTail: AuditVerification['tornTail'];
  const result = (problem?: AuditVerification['problem']): AuditVerification => ({
    ok: problem === undefined,
    lines,
    decisions,
    summaries,
    seals,
    signaturesChecked: publicKey !== undefined,
    lastSealedSeq,
    headHash: prevHash,
    unsealed: sinceSeal,
    files: files.length,
    ...(tornTail ? { tornTail } : {}),
    ...(problem ? { problem } : {}),
  });
  for (let f = 0; f < files.length; f++) {
    const { name, text } = files[f]!;
    const at = name !== undefined ? { file: name } : {};
    const fileLines = text.split('\n');
    const tail = fileLines.pop()!; // '' when the file ends with a newline
    if (tail !== '') {
      if (f < files.length - 1) {
        return result({ kind: 'tampered', ...at, line: fileLines.length + 1, message: 'file does not end with a complete line, but later files follow: records cut out' });
      }
      tornTail = { ...at, line: fileLines.length + 1, bytes: Buffer.byteLength(tail) };
    }
    for (let i = 0; i < fileLines.length; i++) {
      const lineNo = i + 1;
      const line = fileLines[i]!;
      const expected = seq + 1;
      let rec: { seq?: unknown; prevHash?: unknown; type?: unknown; sig?: unknown };
      try {
        rec = JSON.parse(line) as typeof rec;
      } catch {
        return result({ kind: 'tampered', ...at, line: lineNo, message: 'line is not valid JSON (edited or corrupted)' });
      }
      if (rec.seq !== expected) {
        const message =
          typeof rec.seq === 'number' && rec.seq > expected
            ? `sequence jumps from ${expected - 1} to ${rec.seq}: record(s) dropped`
            : `sequence ${String(rec.seq)} where ${expected} was expected: records reordered or duplicated`;
        return result({ kind: 'tampered', ...at, line: lineNo, ...(typeof rec.seq === 'number' ? { seq: rec.seq } : {}), message });
      }
      if (rec.prevHash !== prevHash) {
        return result({ kind: 'tampered', ...at, line: lineNo, seq: expected, message: `prevHash does not match record ${expected - 1}: record ${expected - 1} was edited, or this one was` });
      }
      if (rec.type === 'seal') {
        seals++;
        if (publicKey) {
          const ok = typeof rec.sig === 'string' && verify(null, sealInput(expected, prevHash), publicKey, Buffer.from(rec.sig, 'base64url'));
          if (!ok) return result({ kind: 'tampered', ...at, line: lineNo, seq: expected, message: 'seal signature does not verify under the broker key' });
        }
        lastSealedSeq = expected;
        sinceSeal = 0;
      } else if (rec.type === 'decision' || rec.type === 'summary') {
        if (rec.type === 'decision') decisions++;
        else summaries++;
        sinceSeal++;
      } else {
        return result({ kind: 'tampered', ...at, line: lineNo, seq: expected, message: `unknown record type ${JSON.stringify(rec.type)}` });
      }
      seq = expected;
      lines++;
      prevHash = lineHash(line);
    }
  }
  const last = files.length ? files[files.length - 1]! : undefined;
  const at = last?.name !== undefined ? { file: last.name } : {};
  if (tornTail) {
    return result({
      kind: 'torn-tail',
      ...at,
      line: tornTail.line,
      message: `torn tail: the last line (${tornTail.bytes} bytes, no newline) is an incomplete write, never acknowledged; the broker cuts it when it reopens the log`,
    });
  }
  if (sinceSeal) {
    return result({ kind: 'unsealed', ...at, line: lines, seq, message: `${sinceSeal} record(s) after the last seal (record ${lastSealedSeq}) are not covered by any signature` });
  }
  if (lines === 0) return result({ kind: 'empty', ...at, line: 0, message: 'the audit log is empty: there is nothing to verify' });
  if (!publicKey && !options.allowUnsigned) {
    return result({ kind: 'unsigned', ...at, line: lines, message: 'no broker key: seal signatures not checked (give --key, or --no-signatures to check only the hash chain)' });
  }
  return result();
}
