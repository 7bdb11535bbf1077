import type { BudgetSettings } from './budget.js';

/** The credential gateway's listener and limits (config key `gateway`; absent: no gateway). */
export interface GatewaySettings {
  /** HOST:PORT of the gateway's own TLS listener (TLS 1.3 only; enclaves pin its key). */
  readonly listen: string;
  /** PEM certificate and key of the gateway listener (pinned by enclaves: SPKI SHA-256 in their image). */
  readonly certFile: string;
  readonly keyFile: string;
  /** Tests only: a PEM CA bundle the upstream's certificate is checked against instead of the system roots. */
  readonly upstreamCaFile?: string;
  /** Longest token lifetime in seconds (a token lives at most its binding's ttlSeconds too). Default 300. */
  readonly maxTokenSeconds?: number;
  /** How long the upstream may take to answer with headers, in ms. Default 60000. */
  readonly upstreamTimeoutMs?: number;
  /** The most request-body bytes the gateway holds at once, over all calls (a call that would pass it: 429 RATE_LIMITED). Default 268435456 (256 MiB). */
  readonly maxBufferedBodyBytes?: number;
  /** Where call budgets are counted: `memory` (default; per broker) or a DynamoDB table shared by every replica (may be the nonce table). */
  readonly budgets?: BudgetSettings;
}

const KEYS = new Set(['listen', 'certFile', 'keyFile', 'upstreamCaFile', 'maxTokenSeconds', 'upstreamTimeoutMs', 'maxBufferedBodyBytes', 'budgets']);
const BUDGET_KEYS: Record<string, ReadonlySet<string>> = {
  memory: new Set(['kind', 'maxKeys']),
  dynamodb: new Set(['kind', 'table', 'region', 'endpoint', 'credentials', 'maxAttempts', 'requestTimeoutMs']),
};

/** What is wrong with a `gateway` setting, or undefined (config.ts turns it into a CONFIG_INVALID error). */
export function gatewaySettingsProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'gateway must be an object: {"listen": ..., "certFile": ..., "keyFile": ...}';
  const g = value as Record<string, unknown>;
  for (const key of Object.keys(g)) if (!KEYS.has(key)) return `gateway: unknown setting "${key}"`;
  for (const key of ['listen', 'certFile', 'keyFile']) if (typeof g[key] !== 'string' || g[key] === '') return `gateway.${key} is required`;
  if (g.upstreamCaFile !== undefined && (typeof g.upstreamCaFile !== 'string' || g.upstreamCaFile === '')) return 'gateway.upstreamCaFile must be a file';
  for (const [key, min, max] of [['maxTokenSeconds', 1, 86_400], ['upstreamTimeoutMs', 1, 600_000], ['maxBufferedBodyBytes', 1_024, 2 ** 40]] as const) {
    if (g[key] !== undefined && (!Number.isInteger(g[key]) || (g[key] as number) < min || (g[key] as number) > max)) return `gateway.${key} must be an integer in ${min}..${max}`;
  }
  if (g.budgets !== undefined) {
    const b = g.budgets as Record<string, unknown> | null;
    if (typeof b !== 'object' || b === null || typeof b.kind !== 'string' || !Object.hasOwn(BUDGET_KEYS, b.kind)) return 'gateway.budgets must be {"kind": "memory"} or {"kind": "dynamodb", "table": ...}';
    for (const key of Object.keys(b)) if (!BUDGET_KEYS[b.kind]!.has(key)) return `gateway.budgets: unknown setting "${key}" for kind "${b.kind}"`;
    if (b.kind === 'dynamodb' && (typeof b.table !== 'string' || !/^[A-Za-z0-9_.-]{3,255}$/.test(b.table))) return 'gateway.budgets.table must be a DynamoDB table name';
  }
  return undefined;
}
