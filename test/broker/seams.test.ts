/** The seams of issue 10: factories that choose implementations, the denial-reason vocabulary, and the audit sink interface. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeKeyProviders, openKeyProviders } from '../../broker/kms/registry.js';
import { openStore } from '../../broker/store/open-store.js';
import { PROVIDER_NAMES } from '../../broker/policy/types.js';
import { auditCode, namesDenied } from '../../broker/release/denial.js';
import { DEFAULT_RATE_LIMITS, ReleaseService } from '../../broker/release.js';
import { ChallengeService } from '../../broker/challenge.js';
import { MemoryNonceRegistry } from '../../broker/nonce/memory-registry.js';
import { BrokerMetrics } from '../../broker/metrics.js';
import { loadOrCreateSigningKey } from '../../broker/signing-key.js';
import { BrokerError } from '../../broker/errors.js';
import type { AuditSink } from '../../broker/audit/sink.js';
import type { DecisionRecord } from '../../broker/audit/sink.js';
import type { BindingStore } from '../../broker/store/store.js';
import type { QuarantineStore } from '../../broker/rate-limit.js';
import { QuarantineUnavailableError } from '../../broker/quarantine/store.js';
import type { VerifiedDocument } from '../../broker/verify/index.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-seams-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('factories', () => {
  it('openKeyProviders builds one provider per PROVIDER_NAMES entry, keyed by its own name; closeKeyProviders closes them all', async () => {
    const providers = await openKeyProviders({ localKeyFile: join(dir, 'local.key') });
    expect([...providers.keys()]).toEqual([...PROVIDER_NAMES]);
    for (const [name, provider] of providers) expect(provider.name).toBe(name);
    expect(existsSync(join(dir, 'local.key'))).toBe(true);
    const local = providers.get('local')!;
    const value = new TextEncoder().encode('v');
    expect(await local.decrypt(await local.encrypt(value, 's'), 's')).toEqual(value);
    closeKeyProviders(providers);
  });

  it('openStore opens the configured store directory as a BindingStore', async () => {
    const store: BindingStore = await openStore({ store: join(dir, 'store') });
    expect(existsSync(join(dir, 'store', 'bindings'))).toBe(true);
    const snapshot = await store.refresh();
    expect(snapshot.bindings.size).toBe(0);
    expect(store.problems()).toEqual([]);
  });
});

describe('denial reasons', () => {
  it('each kind has exactly the audit code the log has always carried', () => {
    expect(auditCode({ kind: 'shown', code: 'RATE_LIMITED' })).toBe('RATE_LIMITED');
    expect(auditCode({ kind: 'policy', reason: 'PCR_MISMATCH' })).toBe('PCR_MISMATCH');
    expect(auditCode({ kind: 'batch' })).toBe('BATCH_DENIED');
    expect(auditCode({ kind: 'store', file: 'revocations.json' })).toBe('STORE_UNAVAILABLE:revocations.json');
    expect(auditCode({ kind: 'provider', code: 'KMS_UNAVAILABLE', providerError: 'ThrottlingException' })).toBe('KMS_UNAVAILABLE:ThrottlingException');
    expect(auditCode({ kind: 'provider', code: 'SECRET_UNAVAILABLE', providerError: 'DisabledException' })).toBe('SECRET_UNAVAILABLE:DisabledException');
  });

  it('a per-name denial covers every requested name: the refused ones with their reason, the rest BATCH_DENIED', () => {
    const denial = namesDenied('POLICY_DENIED', 'no', ['a', 'b'], new Map([['b', { kind: 'policy', reason: 'UNKNOWN_SECRET' } as const]]));
    expect(denial.scope).toBe('names');
    if (denial.scope !== 'names') return;
    expect([...denial.reasons].map(([n, r]) => [n, auditCode(r)])).toEqual([
      ['a', 'BATCH_DENIED'],
      ['b', 'UNKNOWN_SECRET'],
    ]);
  });
});

describe('ReleaseService against the AuditSink interface', () => {
  /** A document that verifies (the verifier is faked) and carries a fresh nonce but no public key: a BAD_REQUEST. */
  async function serviceWith(audit: AuditSink, extra: { publicKey?: Uint8Array; quarantine?: QuarantineStore; store?: BindingStore } = {}): Promise<{ release: ReleaseService; attest: () => Uint8Array }> {
    const challenge = new ChallengeService(randomBytes(32));
    let nonce: Uint8Array = new Uint8Array(0);
    const doc = (): VerifiedDocument =>
      ({ moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', pcrs: new Map([[0, new Uint8Array(48).fill(1)]]), debug: false, nonce, publicKey: extra.publicKey ?? null, documentSha256: 'ab'.repeat(32) }) as unknown as VerifiedDocument;
    const release = new ReleaseService({
      verifier: () => doc(),
      roots: [],
      allowDebug: false,
      maxDocumentAgeMs: 300_000,
      store: extra.store ?? (undefined as unknown as BindingStore), // by default never reached: the request is refused before authorise
      providers: new Map(),
      audit,
      challenge,
      nonces: new MemoryNonceRegistry(),
      ...(extra.quarantine ? { quarantine: extra.quarantine } : {}),
      signingKey: await loadOrCreateSigningKey(join(dir, 'signing.jwk')),
      metrics: new BrokerMetrics(),
      secretCacheTtlMs: 0,
      rateLimits: DEFAULT_RATE_LIMITS,
      adminKeys: [generateKeyPairSync('ed25519').publicKey],
      approvalsRequired: 1,
      clock: Date.now,
    });
    return {
      release,
      attest: () => {
        nonce = challenge.issue(Date.now()).nonce;
        return new Uint8Array([1]);
      },
    };
  }

  const codeOf = (p: Promise<unknown>): Promise<string> => p.then(() => 'released', (err: unknown) => (err instanceof BrokerError ? err.code : `not a BrokerError: ${String(err)}`));

  it('a refusal is recorded once, through appendRefusal, with its document', async () => {
    const refusals: DecisionRecord[] = [];
    const sink: AuditSink = { append: async () => expect.fail('per-name append for a name-independent refusal'), appendRefusal: async (r) => void refusals.push(r), appendAdmin: async () => {}, healthy: true, close: async () => {} };
    const { release, attest } = await serviceWith(sink);
    expect(await codeOf(release.release(attest(), ['db'], '127.0.0.1'))).toBe('BAD_REQUEST');
    expect(refusals.map((r) => [r.decision, r.code, r.secret, r.moduleId])).toEqual([['deny', 'BAD_REQUEST', null, 'i-0123456789abcdef0-enc0123456789abcdef']]);
  });

  it('a refusal whose audit record cannot be written answers INTERNAL_ERROR, like every other decision (no swallowed write)', async () => {
    const sink: AuditSink = { append: () => Promise.reject(new Error('disk full')), appendRefusal: () => Promise.reject(new Error('disk full')), appendAdmin: () => Promise.reject(new Error('disk full')), healthy: false, close: async () => {} };
    const { release, attest } = await serviceWith(sink);
    expect(await codeOf(release.release(attest(), ['db'], '127.0.0.1'))).toBe('INTERNAL_ERROR');
  });

  it('the quarantine is a QuarantineStore the release awaits: an async store is obeyed, and one that fails releases nothing', async () => {
    const refusals: DecisionRecord[] = [];
    const sink: AuditSink = { append: async () => {}, appendRefusal: async (r) => void refusals.push(r), appendAdmin: async () => {}, healthy: true, close: async () => {} };
    const publicKey = new Uint8Array(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'der', type: 'spki' }));
    const asked: string[] = [];
    // A shared backend's shape: answers arrive later, as promises.
    const quarantined: QuarantineStore = { isQuarantined: async (identity) => (asked.push(identity), true), recordDenial: async () => {} };
    const shared = await serviceWith(sink, { publicKey, quarantine: quarantined });
    expect(await codeOf(shared.release.release(shared.attest(), ['db'], '127.0.0.1'))).toBe('QUARANTINED');
    expect(asked).toHaveLength(1);
    const failing: QuarantineStore = { isQuarantined: () => Promise.reject(new Error('table unreachable')), recordDenial: async () => {} };
    const broken = await serviceWith(sink, { publicKey, quarantine: failing });
    expect(await codeOf(broken.release.release(broken.attest(), ['db'], '127.0.0.1'))).toBe('INTERNAL_ERROR');
  });

  it('a shared quarantine that cannot answer, or cannot record a denial, refuses with STORE_UNAVAILABLE (nothing released), audited with its error', async () => {
    const refusals: DecisionRecord[] = [];
    const sink: AuditSink = { append: async () => {}, appendRefusal: async (r) => void refusals.push(r), appendAdmin: async () => {}, healthy: true, close: async () => {} };
    const publicKey = new Uint8Array(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'der', type: 'spki' }));
    const down = (): Promise<never> => Promise.reject(new QuarantineUnavailableError('quarantine table: GetItem failed', { storeError: 'ThrottlingException' }));
    const cannotAnswer = await serviceWith(sink, { publicKey, quarantine: { isQuarantined: down, recordDenial: async () => {} } });
    expect(await codeOf(cannotAnswer.release.release(cannotAnswer.attest(), ['db'], '127.0.0.1'))).toBe('STORE_UNAVAILABLE');
    // 'db' is not bound in this empty store: a policy denial, whose count the quarantine cannot record.
    const store = await openStore({ store: join(dir, 'empty-store') });
    const cannotRecord = await serviceWith(sink, { publicKey, store, quarantine: { isQuarantined: async () => false, recordDenial: down } });
    expect(await codeOf(cannotRecord.release.release(cannotRecord.attest(), ['db'], '127.0.0.1'))).toBe('STORE_UNAVAILABLE');
    expect(refusals.map((r) => [r.decision, r.code])).toEqual([
      ['deny', 'STORE_UNAVAILABLE:quarantine:ThrottlingException'],
      ['deny', 'STORE_UNAVAILABLE:quarantine:ThrottlingException'],
    ]);
  });
});
