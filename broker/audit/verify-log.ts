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
  /** Admin API actions (`type: "admin"`). */
  readonly adminActions: number;
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
  const verifier = new AuditChainVerifier(publicKey, options);
  for (const { name, text } of files) {
    verifier.beginFile(name);
    const fileLines = text.split('\n');
    const tail = fileLines.pop()!; // '' when the file ends with a newline
    for (const line of fileLines) if (!verifier.push(line)) return verifier.finish();
    if (tail !== '') verifier.tornLine(Buffer.byteLength(tail));
  }
  return verifier.finish();
}

/**
 * The chain checks of {@link verifyAuditLogs}, one line at a time: a chain
 * far larger than memory (or than V8's longest string) is verified from a
 * stream of lines with constant memory. Feed complete lines with push (it
 * returns false once a problem is found: later lines are not looked at),
 * then call finish for the outcome.
 */
export class AuditChainVerifier {
  readonly #publicKey: KeyObject | undefined;
  readonly #allowUnsigned: boolean;
  #prevHash: string;
  #seq: number;
  #lines = 0;
  #decisions = 0;
  #summaries = 0;
  #adminActions = 0;
  #seals = 0;
  #lastSealedSeq = 0;
  #sinceSeal = 0;
  #files = 0;
  #file: string | undefined;
  /** Line number within the current file. */
  #lineNo = 0;
  #tornTail: AuditVerification['tornTail'];
  #problem: AuditVerification['problem'];

  constructor(publicKey?: KeyObject, options: AuditVerifyOptions = {}) {
    this.#publicKey = publicKey;
    this.#allowUnsigned = options.allowUnsigned === true;
    this.#prevHash = options.from?.prevHash ?? options.genesis ?? GENESIS_HASH;
    this.#seq = options.from?.seq ?? 0;
  }

  /** The first problem found so far. */
  get problem(): AuditVerification['problem'] {
    return this.#problem;
  }

  /** Complete lines checked so far. */
  get lines(): number {
    return this.#lines;
  }

  /** Lines that follow start a new file (named in messages). A torn line before it means records were cut out. */
  beginFile(name?: string): void {
    if (this.#problem) return;
    if (this.#tornTail) {
      this.#fail({ kind: 'tampered', ...this.#at(this.#tornTail.file), line: this.#tornTail.line, message: 'file does not end with a complete line, but later files follow: records cut out' });
      return;
    }
    this.#files++;
    this.#file = name;
    this.#lineNo = 0;
  }

  /** The current file ends in an incomplete line of `bytes` bytes (no newline). */
  tornLine(bytes: number): void {
    if (this.#problem) return;
    this.#tornTail = { ...this.#at(this.#file), line: this.#lineNo + 1, bytes };
  }

  /** Checks the next complete line (without its newline). False once a problem was found. */
  push(line: string): boolean {
    if (this.#problem) return false;
    if (this.#tornTail) {
      this.beginFile(this.#file);
      return false;
    }
    if (this.#files === 0) this.#files = 1;
    const lineNo = ++this.#lineNo;
    const at = this.#at(this.#file);
    const expected = this.#seq + 1;
    let rec: { seq?: unknown; prevHash?: unknown; type?: unknown; sig?: unknown };
    try {
      rec = JSON.parse(line) as typeof rec;
    } catch {
      return this.#fail({ kind: 'tampered', ...at, line: lineNo, message: 'line is not valid JSON (edited or corrupted)' });
    }
    if (rec === null || typeof rec !== 'object') return this.#fail({ kind: 'tampered', ...at, line: lineNo, message: 'line is not a JSON object (edited or corrupted)' });
    if (rec.seq !== expected) {
      const message =
        typeof rec.seq === 'number' && rec.seq > expected
          ? `sequence jumps from ${expected - 1} to ${rec.seq}: record(s) dropped`
          : `sequence ${String(rec.seq)} where ${expected} was expected: records reordered or duplicated`;
      return this.#fail({ kind: 'tampered', ...at, line: lineNo, ...(typeof rec.seq === 'number' ? { seq: rec.seq } : {}), message });
    }
    if (rec.prevHash !== this.#prevHash) {
      return this.#fail({ kind: 'tampered', ...at, line: lineNo, seq: expected, message: `prevHash does not match record ${expected - 1}: record ${expected - 1} was edited, or this one was` });
    }
    if (rec.type === 'seal') {
      this.#seals++;
      if (this.#publicKey) {
        const ok = typeof rec.sig === 'string' && verify(null, sealInput(expected, this.#prevHash), this.#publicKey, Buffer.from(rec.sig, 'base64url'));
        if (!ok) return this.#fail({ kind: 'tampered', ...at, line: lineNo, seq: expected, message: 'seal signature does not verify under the broker key' });
      }
      this.#lastSealedSeq = expected;
      this.#sinceSeal = 0;
    } else if (rec.type === 'decision' || rec.type === 'summary' || rec.type === 'admin') {
      if (rec.type === 'decision') this.#decisions++;
      else if (rec.type === 'admin') this.#adminActions++;
      else this.#summaries++;
      this.#sinceSeal++;
    } else {
      return this.#fail({ kind: 'tampered', ...at, line: lineNo, seq: expected, message: `unknown record type ${JSON.stringify(rec.type)}` });
    }
    this.#seq = expected;
    this.#lines++;
    this.#prevHash = lineHash(line);
    return true;
  }

  /** The outcome: the first problem, else the end-of-log checks (torn tail, unsealed records, empty, unsigned). */
  finish(): AuditVerification {
    if (this.#problem) return this.#result(this.#problem);
    const at = this.#at(this.#file);
    if (this.#tornTail) {
      return this.#result({
        kind: 'torn-tail',
        ...at,
        line: this.#tornTail.line,
        message: `torn tail: the last line (${this.#tornTail.bytes} bytes, no newline) is an incomplete write, never acknowledged; the broker cuts it when it reopens the log`,
      });
    }
    if (this.#sinceSeal) {
      return this.#result({ kind: 'unsealed', ...at, line: this.#lines, seq: this.#seq, message: `${this.#sinceSeal} record(s) after the last seal (record ${this.#lastSealedSeq}) are not covered by any signature` });
    }
    if (this.#lines === 0) return this.#result({ kind: 'empty', ...at, line: 0, message: 'the audit log is empty: there is nothing to verify' });
    if (!this.#publicKey && !this.#allowUnsigned) {
      return this.#result({ kind: 'unsigned', ...at, line: this.#lines, message: 'no broker key: seal signatures not checked (give --key, or --no-signatures to check only the hash chain)' });
    }
    return this.#result();
  }

  #at(file: string | undefined): { file?: string } {
    return file !== undefined ? { file } : {};
  }

  #fail(problem: NonNullable<AuditVerification['problem']>): false {
    this.#problem = problem;
    return false;
  }

  #result(problem?: AuditVerification['problem']): AuditVerification {
    return {
      ok: problem === undefined,
      lines: this.#lines,
      decisions: this.#decisions,
      summaries: this.#summaries,
      adminActions: this.#adminActions,
      seals: this.#seals,
      signaturesChecked: this.#publicKey !== undefined,
      lastSealedSeq: this.#lastSealedSeq,
      headHash: this.#prevHash,
      unsealed: this.#sinceSeal,
      files: this.#files,
      ...(this.#tornTail ? { tornTail: this.#tornTail } : {}),
      ...(problem ? { problem } : {}),
    };
  }
}
