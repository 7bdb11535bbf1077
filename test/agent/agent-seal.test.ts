/**
 * The release answer is sealed by broker/seal/compact.ts (node:crypto), not jose. The real enclave agent (which
 * opens answers with jose's compactDecrypt and compactVerify) must accept exactly what the broker seals and
 * refuse, with UNTRUSTED_RESPONSE, any answer a relay altered: any part of the JWE, or a JWS inside it that is
 * altered or signed by another key. And the broker must seal without WebCrypto (its per-call cost is what
 * the change removes).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret } from '../../broker/admin.js';
import { encryptCompactRsaOaep256A256Gcm, signCompactEdDSA } from '../../broker/seal/compact.js';
import type { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { createAgent, type SecretAgent } from '../../enclave-agent/index.js';
import { startSimulatedBroker } from '../support/simulated-broker.js';
import type { AllowRule } from '../../broker/policy/types.js';
import { errorOf } from '../support/agent.js';
import { ReplayRelay, type SeenRequest } from './replay-relay.js';

let dir: string;
let simulator: NsmSimulator;
let broker: RunningBroker;
let brokerKey: JWK;
let relay: ReplayRelay;
const agents: SecretAgent[] = [];

const SECRET = 'sealed';
const VALUE = 'sealed-value-v1';

async function agent(): Promise<SecretAgent> {
  const a = await createAgent({ brokerUrl: relay.url, brokerKey, nsm: simulator.client(), timeoutMs: 20_000 });
  agents.push(a);
  return a;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-agent-seal-'));
  let allow: AllowRule[];
  ({ simulator, broker, allow, brokerKey } = await startSimulatedBroker(dir));
  await bindSecret(broker.store, broker.providers.get('local')!, { secret: SECRET, value: new TextEncoder().encode(VALUE), allow, provider: 'local', ttlSeconds: 60 });
  relay = await ReplayRelay.start(broker.url);
});

afterEach(() => {
  relay.mode = 'forward';
  relay.forger = undefined;
  vi.restoreAllMocks();
});

afterAll(async () => {
  for (const a of agents) await a.close();
  await relay?.close();
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Answer {
  secrets: Array<{ name: string; version: number; ttlSeconds: number; jwe: string }>;
}

/** The real broker's answer to the request the agent sent (the relay asks the broker itself, then may alter it). */
async function brokerAnswer(seen: SeenRequest): Promise<Answer> {
  const res = await fetch(`${broker.url}/v1/secrets`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ attestation: Buffer.from(seen.document).toString('base64'), names: seen.names }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Answer;
}

/** The answer's JWE with one bit of segment `i` flipped, the segment re-encoded so the token stays well-formed. */
function flip(jwe: string, i: number, byte: number): string {
  const parts = jwe.split('.');
  const bytes = Buffer.from(parts[i]!, 'base64url');
  bytes[byte % bytes.length]! ^= 0x01;
  parts[i] = bytes.toString('base64url');
  return parts.join('.');
}

/** Has the relay answer with `alter` applied to the broker's real answer. */
function relayAltering(alter: (jwe: string, seen: SeenRequest) => string): void {
  relay.forger = async (seen) => {
    const answer = await brokerAnswer(seen);
    return { secrets: answer.secrets.map((s) => ({ ...s, jwe: alter(s.jwe, seen) })) };
  };
  relay.mode = 'forge';
}

/** Claims exactly as the broker builds them for `seen` (what the agent checks after opening). */
function claimsFor(seen: SeenRequest): Record<string, unknown> {
  const iat = Math.floor(Date.now() / 1000);
  return { iss: 'keygate', sub: seen.names[0], ver: 1, val: Buffer.from('relay-sealed').toString('base64url'), text: true, iat, exp: iat + 60, ttl: 60, nonce: seen.nonceHex, doc: seen.documentSha256, aud: seen.moduleId };
}

/** Has the relay answer with a JWS it makes (`jwsOf`) sealed by seal/compact.ts to `recipient` (default: the enclave's key). */
function relaySealing(jwsOf: (payload: Uint8Array) => string, recipient?: KeyObject): void {
  relay.forger = async (seen) => {
    const jws = jwsOf(new TextEncoder().encode(JSON.stringify(claimsFor(seen))));
    const to = recipient ?? createPublicKey({ key: Buffer.from(seen.publicKeyDer), format: 'der', type: 'spki' });
    const jwe = encryptCompactRsaOaep256A256Gcm({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: 'keygate-release+jws', kid: SECRET }, Buffer.from(jws, 'latin1'), to);
    return { secrets: [{ name: SECRET, version: 1, ttlSeconds: 60, jwe }] };
  };
  relay.mode = 'forge';
}

const brokerJws = (payload: Uint8Array): string => signCompactEdDSA({ alg: 'EdDSA', kid: broker.signingKey.kid, typ: 'keygate-release+jws' }, payload, broker.signingKey.privateKey);

describe('the real agent and the node:crypto sealed answer', () => {
  it('accepts the broker answer passed on unaltered (so each refusal below is caused by its one change)', async () => {
    relayAltering((jwe) => jwe);
    expect(await (await agent()).getSecret(SECRET)).toBe(VALUE);
  });

  it('accepts an answer the test seals with seal/compact.ts under the broker key', async () => {
    relaySealing(brokerJws);
    expect(await (await agent()).getSecret(SECRET)).toBe('relay-sealed');
  });

  const segments = ['protected header', 'wrapped CEK', 'IV', 'ciphertext', 'tag'] as const;
  it.each(segments.flatMap((name, i) => [0, 9].map((byte) => [name, i, byte] as const)))('a bit flipped in the JWE %s (segment %i, byte %i) -> UNTRUSTED_RESPONSE', async (_name, i, byte) => {
    relayAltering((jwe) => flip(jwe, i, byte));
    expect((await errorOf((await agent()).getSecret(SECRET))).code).toBe('UNTRUSTED_RESPONSE');
  });

  it('a JWS whose signature was altered -> UNTRUSTED_RESPONSE', async () => {
    relaySealing((payload) => flip(brokerJws(payload), 2, 3));
    expect((await errorOf((await agent()).getSecret(SECRET))).code).toBe('UNTRUSTED_RESPONSE');
  });

  it('a JWS whose payload was altered after signing -> UNTRUSTED_RESPONSE', async () => {
    relaySealing((payload) => {
      const [header, , signature] = brokerJws(payload).split('.');
      const changed = Buffer.from(payload).toString('utf8').replace('"ver":1', '"ver":2');
      return `${header}.${Buffer.from(changed).toString('base64url')}.${signature}`;
    });
    expect((await errorOf((await agent()).getSecret(SECRET))).code).toBe('UNTRUSTED_RESPONSE');
  });

  it('a JWS signed by another Ed25519 key under the broker kid -> UNTRUSTED_RESPONSE', async () => {
    const other = generateKeyPairSync('ed25519').privateKey;
    relaySealing((payload) => signCompactEdDSA({ alg: 'EdDSA', kid: broker.signingKey.kid, typ: 'keygate-release+jws' }, payload, other));
    expect((await errorOf((await agent()).getSecret(SECRET))).code).toBe('UNTRUSTED_RESPONSE');
  });

  it('an answer sealed to another RSA key -> UNTRUSTED_RESPONSE', async () => {
    relaySealing(brokerJws, generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey);
    expect((await errorOf((await agent()).getSecret(SECRET))).code).toBe('UNTRUSTED_RESPONSE');
  });

  it('the broker seals a release without a WebCrypto call (no CryptoKey import, encrypt or sign per answer)', async () => {
    const subtle = globalThis.crypto.subtle;
    const spies = (['importKey', 'encrypt', 'sign', 'generateKey', 'exportKey'] as const).map((m) => vi.spyOn(subtle, m));
    let calls = -1;
    relay.forger = async (seen) => {
      // Only the broker works while the agent waits for this answer: every WebCrypto call in here is the broker's.
      const before = spies.reduce((n, s) => n + s.mock.calls.length, 0);
      const answer = await brokerAnswer(seen);
      calls = spies.reduce((n, s) => n + s.mock.calls.length, 0) - before;
      return answer;
    };
    relay.mode = 'forge';
    expect(await (await agent()).getSecret(SECRET)).toBe(VALUE);
    expect(calls).toBe(0);
  });
});
