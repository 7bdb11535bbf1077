import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';
import { CodedError } from '../../lib/coded-error.js';
import { isDelegationAudience, type DelegationAudience } from '../protocol/index.js';

/**
 * The record of one delegation the broker issued: what `keygate delegations list` shows and what a
 * presentation is checked against (revoked? uses left?). The token carries the same facts signed; the
 * record adds what changes after issue (uses, revoked).
 */
export interface DelegationRecord {
  readonly id: string;
  /** The identity whose policy grants the names (the chain's root): module id and PCR0. */
  readonly parent: { readonly moduleId: string; readonly pcr0: string };
  /** The delegation this one was derived from (a sub-delegation), if any. */
  readonly from: string | null;
  readonly depth: number;
  readonly names: readonly string[];
  /** Seconds since the epoch. */
  readonly iat: number;
  readonly exp: number;
  readonly maxUses: number;
  /** Who may present it: re-checked for every delegate in the middle of a chain (a baseline revoked since stops it). */
  readonly aud: DelegationAudience;
  /** Uses taken: releases, and the uses reserved by sub-delegations derived from it. */
  readonly uses: number;
  readonly revoked: boolean;
}

/** What taking uses of a delegation came to. */
export type UseOutcome = 'ok' | 'unknown' | 'revoked' | 'expired' | 'exhausted';

/**
 * Where delegations are recorded: beside the store (files in its directory, or items in its DynamoDB
 * table), so every replica and the CLI see the same uses and revocations. Implementations live beside it
 * and are built by open-registry.ts only.
 */
export interface DelegationRegistry {
  /** Records a new delegation (uses 0, not revoked). */
  create(record: DelegationRecord): Promise<void>;
  /**
   * Takes `count` uses of `id`, atomically across every replica: succeeds only while the delegation is
   * recorded, not revoked, unexpired at `nowSeconds`, and `uses + count <= maxUses`.
   */
  use(id: string, count: number, nowSeconds: number): Promise<UseOutcome>;
  /** The records of these ids (absent ones are missing from the map): one read for a whole chain. */
  get(ids: readonly string[]): Promise<ReadonlyMap<string, DelegationRecord>>;
  /** Every recorded delegation; `invalid`: ids whose record fails validation (refused to every presenter until fixed or removed). */
  list(): Promise<{ readonly records: DelegationRecord[]; readonly invalid: string[] }>;
  /** Marks a delegation revoked; false when no such delegation is recorded. Idempotent. */
  revoke(id: string): Promise<boolean>;
  close(): void;
}

/** The registry could not answer (disk, DynamoDB throttled or unreachable): nothing is released or issued. */
export class DelegationRegistryUnavailableError extends CodedError<'DELEGATION_REGISTRY_UNAVAILABLE'> {
  override readonly name = 'DelegationRegistryUnavailableError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('DELEGATION_REGISTRY_UNAVAILABLE', message, options);
  }
}

/** The DynamoDB registry's table settings (the store's table; credentials from code in tests). */
export type DynamoDbDelegationSettings = DynamoDbTableSettings;

export const DELEGATION_ID = /^[A-Za-z0-9_-]{16,64}$/;

/**
 * A new delegation id from 16 random bytes: `dlg_` + their base64url. The prefix keeps an id from
 * starting with "-" (a bare base64url id does 1 time in 64), which a command line takes for a flag
 * (`keygate revoke --delegation ID`). Ids issued before the prefix stay valid.
 */
export function newDelegationId(random: Uint8Array): string {
  if (random.length !== 16) throw new RangeError('a delegation id takes 16 random bytes');
  return `dlg_${Buffer.from(random.buffer, random.byteOffset, random.length).toString('base64url')}`;
}

/** A record read back from storage, checked field by field (a damaged file or item is not believed). */
export function parseDelegationRecord(v: unknown): DelegationRecord | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const r = v as Record<string, unknown>;
  const int = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  const p = r.parent as Record<string, unknown> | null | undefined;
  if (typeof r.id !== 'string' || !DELEGATION_ID.test(r.id)) return undefined;
  if (typeof p !== 'object' || p === null || typeof p.moduleId !== 'string' || typeof p.pcr0 !== 'string') return undefined;
  if (!(r.from === null || (typeof r.from === 'string' && DELEGATION_ID.test(r.from)))) return undefined;
  if (!int(r.depth) || !int(r.iat) || !int(r.exp) || !int(r.maxUses) || !int(r.uses) || typeof r.revoked !== 'boolean') return undefined;
  if (!Array.isArray(r.names) || r.names.some((n) => typeof n !== 'string')) return undefined;
  if (!isDelegationAudience(r.aud)) return undefined;
  return {
    id: r.id,
    parent: { moduleId: p.moduleId, pcr0: p.pcr0 },
    from: r.from,
    depth: r.depth,
    names: [...(r.names as string[])],
    iat: r.iat,
    exp: r.exp,
    maxUses: r.maxUses,
    aud: r.aud,
    uses: r.uses,
    revoked: r.revoked,
  };
}

/** What a use of `record` would come to (shared by the implementations that decide in process). */
export function useOutcome(record: DelegationRecord | undefined, count: number, nowSeconds: number): UseOutcome {
  if (!record) return 'unknown';
  if (record.revoked) return 'revoked';
  if (record.exp <= nowSeconds) return 'expired';
  if (record.uses + count > record.maxUses) return 'exhausted';
  return 'ok';
}
