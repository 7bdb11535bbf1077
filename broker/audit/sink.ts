/**
 * The audit sink the release path writes decisions to. The hash-chained,
 * signed JSONL log (log.ts) implements it; ReleaseService and the HTTP layer
 * depend on this interface only.
 */
import type { PcrValues } from '../../lib/pcrs.js';
import { CodedError } from '../../lib/coded-error.js';

/** The PCRs an audit record keeps: the image (0, 1, 2) and the instance (4). */
export const AUDITED_PCRS = [0, 1, 2, 4] as const;

/** One decision as the broker saw it (design.md section 4). */
export interface DecisionRecord {
  readonly time: string;
  /** `delegate`: a delegation was issued for this secret (broker/delegation); `token`: a gateway token was issued; `call`: a gateway call was forwarded (broker/gateway); `approval`: a human-approval event (pending, granted, denied, expired) for the request, nothing released by it. */
  readonly decision: 'release' | 'deny' | 'delegate' | 'token' | 'call' | 'approval';
  /** RELEASED, or the true reason for a denial (finer than what the caller was told). */
  readonly code: string;
  readonly secret: string | null;
  readonly version: number | null;
  readonly moduleId: string | null;
  readonly pcrs: PcrValues<(typeof AUDITED_PCRS)[number]> | null;
  readonly docSha256: string | null;
  readonly nonce: string | null;
  readonly client: string;
  readonly latencyMs: number;
  /** A delegated release or an issued delegation: the delegation and every identity of its chain (root first). */
  readonly delegation?: {
    readonly id: string;
    readonly depth: number;
    readonly chain: ReadonlyArray<{ readonly moduleId: string; readonly pcr0: string | null }>;
    readonly parents: readonly string[];
    /** An issued delegation (decision `delegate`): its audience, expiry (seconds since the epoch) and uses. */
    readonly grant?: { readonly aud: { readonly pcrs: PcrValues } | { readonly baseline: string }; readonly exp: number; readonly maxUses: number };
  };
  /** A gateway call (decision `call`, or its denial): what was asked of the upstream. Never bodies or credential headers. */
  readonly gateway?: GatewayCallRecord;
  /** Human approval (broker/approval): the request, the event, and the approver keys (RFC 7638 thumbprints) it concerns. */
  readonly approval?: { readonly id: string; readonly event: string; readonly approvers: readonly string[]; readonly expiresAt: string; readonly at?: string };
}

/** The audited facts of one gateway call; the path carries no query values. */
export interface GatewayCallRecord {
  readonly jti: string;
  readonly method: string;
  readonly host: string;
  readonly path: string;
  /** The upstream's status (null: no answer from it). */
  readonly status: number | null;
  readonly bytesIn: number;
  /** Known when the upstream declares Content-Length; null for a streamed answer (it is passed on as it arrives). */
  readonly bytesOut: number | null;
}

/**
 * One admin API action (`type: "admin"` in the log): who (the admin key's JWK thumbprint and the token's
 * jti), what, and the versions before and after. Never a value or a ciphertext.
 */
export interface AdminRecord {
  readonly time: string;
  /** The operation, e.g. "bind", "rotate", "revoke-secret". */
  readonly action: string;
  /** pending (the intent, written before a change is made), ok, or the stable code it was refused with (after the token verified). */
  readonly outcome: string;
  /** RFC 7638 thumbprint (SHA-256) of the admin API key that signed the token. */
  readonly kid: string;
  readonly jti: string;
  readonly secret: string | null;
  readonly versionBefore: number | null;
  readonly versionAfter: number | null;
  /** Non-secret detail: identities revoked, baseline name, approval kid. */
  readonly detail?: Readonly<Record<string, unknown>>;
  readonly client: string;
}

export interface AuditSink {
  /** Appends a decision; resolves only once it is durable (a response may then be sent). */
  append(record: DecisionRecord): Promise<void>;
  /**
   * Records a refusal that does not depend on the names asked for (an
   * unverified document, a rate limit, a bad request): a bounded, sampled
   * record, so junk cannot fill the audit disk.
   */
  appendRefusal(record: DecisionRecord): Promise<void>;
  /** Appends an admin API action; resolves only once it is durable (the answer is sent after). */
  appendAdmin(record: AdminRecord): Promise<void>;
  /** Seq and hash of the last durable record (the admin API's audit head); sinks without one omit it. */
  readonly head?: { readonly seq: number; readonly prevHash: string };
  /** False while records cannot be written (readiness reports it). */
  readonly healthy: boolean;
  /** Flushes what is pending and closes. */
  close(): Promise<void>;
}

/** The audit sink cannot take records right now (a write failed and it has not recovered yet, or it was closed or abandoned). */
export class AuditUnavailableError extends CodedError<'AUDIT_UNAVAILABLE'> {
  override readonly name = 'AuditUnavailableError';
  /** Set when the audit lives in a shared store (DynamoDB): its error name. The caller is then told STORE_UNAVAILABLE (503, retry later). */
  readonly storeError: string | undefined;
  constructor(message: string, options?: { cause?: unknown; storeError?: string }) {
    super('AUDIT_UNAVAILABLE', message, options);
    this.storeError = options?.storeError;
  }
}
