import { createPrivateKey, randomUUID, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ADMIN_SCOPES, MAX_TOKEN_LIFETIME_S, mintAdminToken, type AdminScope } from '../broker/admin-api/token.js';
import { UsageError } from './errors.js';
import { parseDuration } from './parse.js';

/**
 * The CLI side of the admin HTTP API: `keygate admin token`, and `--broker-admin URL` on the store
 * commands (the operation then runs on the broker, authorized by a token, instead of on the store).
 */

/** Options a store command takes to go through the admin API. */
export const ADMIN_CLIENT_OPTIONS = {
  'broker-admin': { type: 'string' },
  token: { type: 'string' },
  key: { type: 'string' },
  aud: { type: 'string' },
} as const;

export const ADMIN_CLIENT_USAGE = `  --broker-admin URL go through the broker's admin API (adminListen) instead of the store
  --token T          with --broker-admin: an admin token (keygate admin token); single use
  --key K            with --broker-admin: mint a token with this admin API private key instead
  --aud A            the admin audience when minting (default keygate-admin)`;

export interface AdminClientFlags {
  'broker-admin'?: string;
  token?: string;
  key?: string;
  aud?: string;
}

/** Reads an admin API private key (Ed25519 or P-256; private JWK or PKCS#8 PEM). */
export async function loadAdminPrivateKey(path: string): Promise<KeyObject> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { hint: false });
  }
  try {
    const key = text.trimStart().startsWith('{') ? createPrivateKey({ key: JSON.parse(text) as import('node:crypto').JsonWebKey, format: 'jwk' }) : createPrivateKey(text);
    const ok = key.asymmetricKeyType === 'ed25519' || (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1');
    if (!ok) throw new Error('not Ed25519 or P-256');
    return key;
  } catch {
    throw new UsageError(`${path} is not an Ed25519 or P-256 private key (JWK or PKCS#8 PEM)`, { hint: false });
  }
}

export function parseScopes(values: readonly string[]): AdminScope[] {
  const scopes = values.flatMap((v) => v.split(/[ ,]+/)).filter(Boolean);
  if (!scopes.length) throw new UsageError(`give --scope S (one of ${ADMIN_SCOPES.join(', ')})`);
  for (const s of scopes) if (!(ADMIN_SCOPES as readonly string[]).includes(s)) throw new UsageError(`unknown scope "${s}" (one of ${ADMIN_SCOPES.join(', ')})`);
  return scopes as AdminScope[];
}

export async function mintToken(keyFile: string, scopes: readonly AdminScope[], ttl: string | undefined, aud: string | undefined, now: number): Promise<string> {
  const ttlSeconds = ttl === undefined ? 60 : Math.round(parseDuration(ttl, '--ttl') / 1000);
  if (ttlSeconds < 1 || ttlSeconds > MAX_TOKEN_LIFETIME_S) throw new UsageError(`--ttl must be 1s..${MAX_TOKEN_LIFETIME_S}s (brokers refuse longer-lived admin tokens)`);
  return mintAdminToken({ key: await loadAdminPrivateKey(keyFile), scopes, audience: aud ?? 'keygate-admin', ttlSeconds, now, jti: randomUUID() });
}

/**
 * One admin API call: the token from --token, or minted from --key with exactly `scope`. A refusal
 * becomes a usage error carrying the broker's code (and reason).
 */
export async function adminCall(flags: AdminClientFlags, scope: AdminScope, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const base = flags['broker-admin']!;
  if (Boolean(flags.token) === Boolean(flags.key)) throw new UsageError('--broker-admin needs exactly one of --token T or --key K');
  let url: URL;
  try {
    url = new URL(path, base);
  } catch {
    throw new UsageError(`--broker-admin ${base}: not a URL`);
  }
  const token = flags.token ?? (await mintToken(flags.key!, [scope], undefined, flags.aud, Date.now()));
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    throw new UsageError(`cannot reach the admin API at ${url.origin}: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`, { hint: false });
  }
  const json = (await res.json().catch(() => ({}))) as Record<string, unknown>;
  if (!res.ok) {
    const e = (json.error ?? {}) as { code?: string; message?: string; reason?: string };
    throw new UsageError(`${e.code ?? `HTTP ${res.status}`}${e.reason ? ` (${e.reason})` : ''}: ${e.message ?? 'refused by the admin API'}`, { hint: false });
  }
  return json;
}
