/** Limits on delegations (broker config `delegation`). */
export interface DelegationSettings {
  /** Longest TTL a delegation may get, in seconds (it is also bounded by the names' binding TTLs). Default 3600. */
  readonly maxTtlSeconds: number;
  /** Longest chain: 1 = only attested parents delegate; 2 (default) = a sub-agent may delegate once more. */
  readonly maxDepth: number;
  /** Most uses one delegation may allow. Default 1000. */
  readonly maxUses: number;
}

export const DEFAULT_DELEGATION_SETTINGS: DelegationSettings = { maxTtlSeconds: 3600, maxDepth: 2, maxUses: 1000 };
