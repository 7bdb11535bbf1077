/**
 * A failure while sealing an answer (node:crypto throwing: an OpenSSL or memory failure; no input reaches it with a
 * checked RSA-2048 key) comes after the nonce is spent and the value decrypted: it must still be an audited
 * decision, not only an INTERNAL_ERROR answer (found by an adversarial review; failed before the fix: no record).
 * The verifier is a stub here: the document's shape is not what is tested.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { DEFAULT_RATE_LIMITS, ReleaseService } from '../../broker/release.js';
import { ChallengeService } from '../../broker/challenge.js';
import { MemoryNonceRegistry } from '../../broker/nonce/memory-registry.js';
import { BrokerMetrics } from '../../broker/metrics.js';
import { loadOrCreateSigningKey } from '../../broker/signing-key.js';
import { BrokerError } from '../../broker/errors.js';
import type { AuditSink, DecisionRecord } from '../../broker/audit/sink.js';
import type { VerifiedDocument } from '../../broker/verify/index.js';
import type { KeyProvider } from '../../broker/kms/provider.js';
import type { ProviderName } from '../../broker/policy/types.js';
import { FileStore } from '../../broker/store/file-store.js';
import { LocalKeyProvider } from '../../broker/kms/local.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { APPROVED, buildPcrs } from '../support/enclave.js';

const failSeal = { on: false };
vi.mock('../../broker/seal/compact.js', async (orig) => {
  const m = await orig<typeof import('../../broker/seal/compact.js')>();
  return {
    ...m,
    encryptCompactRsaOaep256A256Gcm: (...a: Parameters<typeof m.encryptCompactRsaOaep256A256Gcm>) => {
      if (failSeal.on) throw new Error('seal failed (simulated OpenSSL error)');
      return m.encryptCompactRsaOaep256A256Gcm(...a);
    },
  };
});

let dir: string;
beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'keygate-seal-fail-')); failSeal.on = false; });
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function setup(audit: AuditSink) {
  const store = await FileStore.open(join(dir, 'store'));
  const local = await LocalKeyProvider.open(join(dir, 'local.key'));
  await bindSecret(store, local, { secret: 'db', value: new TextEncoder().encode('db-value'), allow: [pcrSet(APPROVED)], provider: 'local' });
  const decrypted: Uint8Array[] = [];
  const spy: KeyProvider = Object.assign(Object.create(Object.getPrototypeOf(local)), local, {
    decrypt: async (ciphertext: string, secret: string) => { const v = await local.decrypt(ciphertext, secret); decrypted.push(v); return v; },
  });
  const challenge = new ChallengeService(randomBytes(32));
  const publicKey = new Uint8Array(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'der', type: 'spki' }));
  let nonce: Uint8Array = new Uint8Array(0);
  const release = new ReleaseService({
    verifier: () => ({ moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', pcrs: buildPcrs(), debug: false, nonce, publicKey, documentSha256: 'ab'.repeat(32), timestamp: Date.now() }) as unknown as VerifiedDocument,
    roots: [], allowDebug: false, maxDocumentAgeMs: 300_000, store,
    providers: new Map<ProviderName, KeyProvider>([['local', spy]]),
    audit, challenge, nonces: new MemoryNonceRegistry(),
    signingKey: await loadOrCreateSigningKey(join(dir, 'signing.jwk')),
    metrics: new BrokerMetrics(), secretCacheTtlMs: 0, rateLimits: DEFAULT_RATE_LIMITS,
    adminKeys: [generateKeyPairSync('ed25519').publicKey], approvalsRequired: 1, clock: Date.now,
  });
  const attest = () => { nonce = challenge.issue(Date.now()).nonce; return new Uint8Array([1]); };
  return { release, attest, decrypted };
}

const codeOf = (p: Promise<unknown>): Promise<string> => p.then(() => 'released', (err: unknown) => (err instanceof BrokerError ? err.code : `not a BrokerError: ${String(err)}`));

describe('a sealing exception (after the nonce is spent and the value decrypted)', () => {
  it('is fail-closed (INTERNAL_ERROR), wipes the decrypted value, and the decision is audited for the name', async () => {
    const records: DecisionRecord[] = [];
    const sink: AuditSink = { append: async (r) => void records.push(r), appendRefusal: async (r) => void records.push(r), appendAdmin: async () => {}, healthy: true, close: async () => {} };
    const { release, attest, decrypted } = await setup(sink);
    expect(await codeOf(release.release(attest(), ['db'], '127.0.0.1'))).toBe('released'); // harness sanity
    records.length = 0; decrypted.length = 0;
    failSeal.on = true;
    expect(await codeOf(release.release(attest(), ['db'], '127.0.0.1'))).toBe('INTERNAL_ERROR');
    expect(decrypted.length).toBeGreaterThan(0);
    for (const v of decrypted) expect(v.every((x) => x === 0)).toBe(true);
    // The nonce was consumed and KMS was asked: an audited broker must say so (deny record for 'db').
    expect(records.map((r) => [r.decision, r.secret])).toEqual([['deny', 'db']]);
  });
});
