/**
 * broker/seal/compact.ts writes the release answer's JWS and JWE with node:crypto instead of jose. These tests
 * hold it to jose: the JWS is byte for byte jose's (Ed25519 is deterministic), jose's compactVerify and
 * compactDecrypt accept what it writes, the protected headers are exactly the broker's, every answer has its own
 * CEK and IV, and any altered part is refused. The real enclave agent's side is test/agent/agent-seal.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { createPublicKey, generateKeyPairSync, privateDecrypt, constants, randomBytes, type KeyObject } from 'node:crypto';
import { CompactSign, compactDecrypt, compactVerify, decodeProtectedHeader } from 'jose';
import fc from 'fast-check';
import { encryptCompactRsaOaep256A256Gcm, signCompactEdDSA } from '../../broker/seal/compact.js';
import { RecipientKeyCache, importRsa2048Spki } from '../../broker/recipient-key.js';
import { DerError } from '../../broker/verify/der.js';
import { openReleaseEnvelope } from '../../enclave-agent/release-envelope.js';

const ed = generateKeyPairSync('ed25519');
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const spki = new Uint8Array(rsa.publicKey.export({ format: 'der', type: 'spki' }));
const JWS_HEADER = { alg: 'EdDSA', kid: 'b64-thumbprint_kid', typ: 'keygate-release+jws' } as const;
const JWE_HEADER = { alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: 'keygate-release+jws', kid: 'db-password' } as const;
const DECRYPT_OPTIONS = { keyManagementAlgorithms: ['RSA-OAEP-256'], contentEncryptionAlgorithms: ['A256GCM'] };

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);
const rawHeader = (token: string): string => Buffer.from(token.split('.')[0]!, 'base64url').toString('utf8');
const seg = (token: string, i: number): Buffer => Buffer.from(token.split('.')[i]!, 'base64url');

/** `token` with one bit of segment `i` flipped (the segment re-encoded, so the token stays well-formed). */
function flip(token: string, i: number, byte = 0): string {
  const parts = token.split('.');
  const bytes = Buffer.from(parts[i]!, 'base64url');
  bytes[byte % bytes.length]! ^= 0x01;
  parts[i] = bytes.toString('base64url');
  return parts.join('.');
}

describe('signCompactEdDSA', () => {
  it('is byte-identical to jose CompactSign for the same key, header and payload', async () => {
    const claims = utf8(JSON.stringify({ iss: 'keygate', sub: 'db-password', ver: 3, val: 'c2VjcmV0', text: true, iat: 1, exp: 2, ttl: 60, nonce: 'ab'.repeat(32) }));
    const jose = await new CompactSign(claims).setProtectedHeader({ ...JWS_HEADER }).sign(ed.privateKey);
    expect(signCompactEdDSA(JWS_HEADER, claims, ed.privateKey)).toBe(jose);
  });

  it('is byte-identical to jose for arbitrary payloads (empty, binary, non-ASCII, subarray views)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), fc.nat(8), async (bytes, offset) => {
        const padded = new Uint8Array(bytes.length + offset);
        padded.set(bytes, offset);
        const view = padded.subarray(offset); // a view into a larger buffer must sign only its own bytes
        const jose = await new CompactSign(bytes).setProtectedHeader({ ...JWS_HEADER }).sign(ed.privateKey);
        expect(signCompactEdDSA(JWS_HEADER, view, ed.privateKey)).toBe(jose);
      }),
      { numRuns: 60 },
    );
    const unicode = utf8(JSON.stringify({ sub: 'naïve ✓ 秘密' }));
    expect(signCompactEdDSA(JWS_HEADER, unicode, ed.privateKey)).toBe(await new CompactSign(unicode).setProtectedHeader({ ...JWS_HEADER }).sign(ed.privateKey));
  });

  it('is accepted by jose compactVerify (EdDSA only), protected header exactly as the broker sets it', async () => {
    const jws = signCompactEdDSA(JWS_HEADER, utf8('{"a":1}'), ed.privateKey);
    const verified = await compactVerify(jws, ed.publicKey, { algorithms: ['EdDSA'] });
    expect(new TextDecoder().decode(verified.payload)).toBe('{"a":1}');
    expect(rawHeader(jws)).toBe('{"alg":"EdDSA","kid":"b64-thumbprint_kid","typ":"keygate-release+jws"}');
    expect(verified.protectedHeader).toEqual(JWS_HEADER);
  });

  it('is refused by jose compactVerify once any part is altered, or under another key', async () => {
    const jws = signCompactEdDSA(JWS_HEADER, utf8('{"sub":"db-password"}'), ed.privateKey);
    for (const i of [0, 1, 2]) {
      await expect(compactVerify(flip(jws, i, 5), ed.publicKey, { algorithms: ['EdDSA'] }), `segment ${i}`).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_JWS_(SIGNATURE_VERIFICATION_FAILED|INVALID)$/) });
    }
    await expect(compactVerify(jws, generateKeyPairSync('ed25519').publicKey, { algorithms: ['EdDSA'] })).rejects.toMatchObject({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
  });

  it('refuses a header that is not EdDSA and a key that is not an Ed25519 private key', () => {
    expect(() => signCompactEdDSA({ ...JWS_HEADER, alg: 'ES256' } as unknown as typeof JWS_HEADER, utf8('x'), ed.privateKey)).toThrow(/EdDSA only/);
    expect(() => signCompactEdDSA(JWS_HEADER, utf8('x'), ed.publicKey)).toThrow(/Ed25519 private key/);
    expect(() => signCompactEdDSA(JWS_HEADER, utf8('x'), generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)).toThrow(/Ed25519 private key/);
  });
});

describe('encryptCompactRsaOaep256A256Gcm', () => {
  const recipient = importRsa2048Spki(spki);

  it('is opened by jose compactDecrypt (RSA-OAEP-256 / A256GCM only), protected header exactly as the broker sets it', async () => {
    const plaintext = utf8(signCompactEdDSA(JWS_HEADER, utf8('{"val":"c2VjcmV0"}'), ed.privateKey));
    const jwe = encryptCompactRsaOaep256A256Gcm(JWE_HEADER, plaintext, recipient);
    const opened = await compactDecrypt(jwe, rsa.privateKey, DECRYPT_OPTIONS);
    expect(Buffer.from(opened.plaintext).equals(Buffer.from(plaintext))).toBe(true);
    expect(rawHeader(jwe)).toBe('{"alg":"RSA-OAEP-256","enc":"A256GCM","cty":"keygate-release+jws","kid":"db-password"}');
    expect(opened.protectedHeader).toEqual(JWE_HEADER);
    expect(decodeProtectedHeader(jwe)).toEqual(JWE_HEADER);
  });

  it('round-trips arbitrary plaintexts through jose (empty, long, subarray views)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 4096 }), fc.nat(8), async (bytes, offset) => {
        const padded = new Uint8Array(bytes.length + offset);
        padded.set(bytes, offset);
        const jwe = encryptCompactRsaOaep256A256Gcm(JWE_HEADER, padded.subarray(offset), recipient);
        const { plaintext } = await compactDecrypt(jwe, rsa.privateKey, DECRYPT_OPTIONS);
        expect(Buffer.from(plaintext).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 40 },
    );
  });

  it('uses RSAES-OAEP with SHA-256 and MGF1-SHA-256 over a 256-bit CEK, a 96-bit IV and a 128-bit tag', () => {
    const jwe = encryptCompactRsaOaep256A256Gcm(JWE_HEADER, utf8('x'), recipient);
    expect(jwe.split('.')).toHaveLength(5);
    expect(seg(jwe, 1)).toHaveLength(256);
    expect(seg(jwe, 2)).toHaveLength(12);
    expect(seg(jwe, 4)).toHaveLength(16);
    const cek = privateDecrypt({ key: rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, seg(jwe, 1));
    expect(cek).toHaveLength(32);
    // SHA-1 OAEP (what RSA-OAEP without -256 means) must not open it.
    expect(() => privateDecrypt({ key: rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' }, seg(jwe, 1))).toThrow();
  });

  it('draws the IV apart from the CEK (one random draw, split, never overlapping)', () => {
    for (let i = 0; i < 10; i++) {
      const jwe = encryptCompactRsaOaep256A256Gcm(JWE_HEADER, utf8('x'), recipient);
      const cek = privateDecrypt({ key: rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, seg(jwe, 1));
      const iv = seg(jwe, 2);
      for (let at = 0; at + iv.length <= cek.length; at++) expect(cek.subarray(at, at + iv.length).equals(iv)).toBe(false);
    }
  });

  it('draws a fresh CEK and IV for every answer', () => {
    const plaintext = utf8('the same plaintext');
    const tokens = Array.from({ length: 20 }, () => encryptCompactRsaOaep256A256Gcm(JWE_HEADER, plaintext, recipient));
    const ceks = tokens.map((t) => privateDecrypt({ key: rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, seg(t, 1)).toString('hex'));
    expect(new Set(ceks).size).toBe(tokens.length);
    expect(new Set(tokens.map((t) => t.split('.')[2])).size).toBe(tokens.length);
    expect(new Set(tokens.map((t) => t.split('.')[3])).size).toBe(tokens.length);
  });

  it('draws a fresh CEK and IV for every answer across refills of the randomness pool (64 answers a fill), each opened by jose', async () => {
    const plaintext = utf8('the same plaintext');
    const tokens = Array.from({ length: 150 }, () => encryptCompactRsaOaep256A256Gcm(JWE_HEADER, plaintext, recipient));
    const ceks = tokens.map((t) => privateDecrypt({ key: rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, seg(t, 1)));
    expect(new Set(ceks.map((c) => c.toString('hex'))).size).toBe(tokens.length);
    expect(new Set(tokens.map((t) => t.split('.')[2])).size).toBe(tokens.length);
    // Neither a zeroed (wiped, then handed out again) nor an all-equal draw.
    for (const cek of ceks) expect(cek.equals(Buffer.alloc(32))).toBe(false);
    for (const t of tokens) expect(seg(t, 2).equals(Buffer.alloc(12))).toBe(false);
    for (const t of [tokens[0]!, tokens[63]!, tokens[64]!, tokens[149]!]) {
      expect(Buffer.from((await compactDecrypt(t, rsa.privateKey, DECRYPT_OPTIONS)).plaintext).equals(Buffer.from(plaintext))).toBe(true);
    }
  });

  it('answers made across pool refills are opened by the enclave agent, and a tampered one is refused UNTRUSTED_RESPONSE', () => {
    const claims = utf8('{"sub":"db-password","val":"c2VjcmV0"}');
    const answers = Array.from({ length: 130 }, () => encryptCompactRsaOaep256A256Gcm(JWE_HEADER, utf8(signCompactEdDSA(JWS_HEADER, claims, ed.privateKey)), recipient));
    for (const jwe of [answers[0]!, answers[63]!, answers[64]!, answers[127]!, answers[128]!]) {
      expect(openReleaseEnvelope(jwe, rsa.privateKey, ed.publicKey).equals(Buffer.from(claims))).toBe(true);
      for (const i of [1, 2, 3, 4]) expect(() => openReleaseEnvelope(flip(jwe, i), rsa.privateKey, ed.publicKey), `segment ${i}`).toThrow(expect.objectContaining({ code: 'UNTRUSTED_RESPONSE' }));
    }
  });

  it('is refused by jose compactDecrypt once the header, wrapped key, IV, ciphertext or tag is altered', async () => {
    const jwe = encryptCompactRsaOaep256A256Gcm(JWE_HEADER, utf8('a secret worth protecting'), recipient);
    for (const i of [0, 1, 2, 3, 4]) {
      for (const byte of [0, 7]) {
        const tampered = flip(jwe, i, byte);
        await expect(compactDecrypt(tampered, rsa.privateKey, DECRYPT_OPTIONS), `segment ${i} byte ${byte}`).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_JWE_(DECRYPTION_FAILED|INVALID)$|^ERR_JOSE_NOT_SUPPORTED$/) });
      }
    }
    await expect(compactDecrypt(jwe, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, DECRYPT_OPTIONS)).rejects.toMatchObject({ code: 'ERR_JWE_DECRYPTION_FAILED' });
  });

  it('refuses a header other than RSA-OAEP-256 / A256GCM and a key that is not an RSA public key', () => {
    const bad = (h: object): typeof JWE_HEADER => h as typeof JWE_HEADER;
    expect(() => encryptCompactRsaOaep256A256Gcm(bad({ ...JWE_HEADER, alg: 'RSA-OAEP' }), utf8('x'), recipient)).toThrow(/RSA-OAEP-256 \/ A256GCM only/);
    expect(() => encryptCompactRsaOaep256A256Gcm(bad({ ...JWE_HEADER, enc: 'A128GCM' }), utf8('x'), recipient)).toThrow(/RSA-OAEP-256 \/ A256GCM only/);
    expect(() => encryptCompactRsaOaep256A256Gcm(JWE_HEADER, utf8('x'), rsa.privateKey)).toThrow(/RSA public key/);
    expect(() => encryptCompactRsaOaep256A256Gcm(JWE_HEADER, utf8('x'), ed.publicKey)).toThrow(/RSA public key/);
  });
});

describe('importRsa2048Spki', () => {
  it('gives the same public key as the SPKI itself, as a node:crypto KeyObject', () => {
    const key: KeyObject = importRsa2048Spki(spki);
    expect(key.type).toBe('public');
    expect(key.asymmetricKeyType).toBe('rsa');
    expect(key.asymmetricKeyDetails?.modulusLength).toBe(2048);
    expect(key.export({ format: 'jwk' })).toEqual(createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({ format: 'jwk' }));
  });

  it('refuses what is not an RSA-2048 SPKI with a DerError', () => {
    const ec = new Uint8Array(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' }));
    const rsa1024 = new Uint8Array(generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({ format: 'der', type: 'spki' }));
    const trailing = new Uint8Array([...spki, 0]);
    for (const bad of [ec, rsa1024, trailing, spki.subarray(0, spki.length - 1), new Uint8Array(randomBytes(300)), new Uint8Array(0)]) {
      expect(() => importRsa2048Spki(bad)).toThrow(DerError);
    }
  });
});

describe('RecipientKeyCache (the release path imports each enclave key once)', () => {
  const jwkOf = (key: KeyObject): unknown => key.export({ format: 'jwk' });

  it('gives the key a fresh import gives; the same KeyObject again for the same bytes, in any view', () => {
    const cache = new RecipientKeyCache();
    const key = cache.import(spki);
    expect(jwkOf(key)).toEqual(jwkOf(importRsa2048Spki(spki)));
    const padded = new Uint8Array(spki.length + 5);
    padded.set(spki, 5);
    expect(cache.import(padded.subarray(5))).toBe(key);
    expect(cache.import(Uint8Array.from(spki))).toBe(key);
    const other = new Uint8Array(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'der', type: 'spki' }));
    expect(jwkOf(cache.import(other))).toEqual(jwkOf(importRsa2048Spki(other)));
    expect(jwkOf(cache.import(other))).not.toEqual(jwkOf(key));
    expect(cache.size).toBe(2);
  });

  it('answers as importRsa2048Spki for any bytes near a kept key (differential): same refusals, same keys, refusals never kept', () => {
    const cache = new RecipientKeyCache();
    cache.import(spki);
    fc.assert(
      fc.property(fc.nat(spki.length + 1), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'add'), (at, byte, edit) => {
        const bytes = edit === 'set' ? Uint8Array.from(spki, (b, i) => (i === at ? byte : b)) : edit === 'cut' ? spki.subarray(0, Math.min(at, spki.length - 1)) : new Uint8Array([...spki.subarray(0, at), byte, ...spki.subarray(at)]);
        let direct: unknown;
        try {
          direct = jwkOf(importRsa2048Spki(bytes));
        } catch (err) {
          direct = err instanceof DerError ? 'DerError' : err instanceof Error ? err.name : 'thrown';
        }
        for (let twice = 0; twice < 2; twice++) {
          let cached: unknown;
          try {
            cached = jwkOf(cache.import(bytes));
          } catch (err) {
            cached = err instanceof DerError ? 'DerError' : err instanceof Error ? err.name : 'thrown';
          }
          expect(cached).toEqual(direct);
        }
      }),
      { numRuns: 300 },
    );
    // Only keys that imported are kept (the original, plus edits that are still RSA-2048 keys).
    const before = cache.size;
    for (const bad of [new Uint8Array([...spki, 0]), spki.subarray(0, spki.length - 1), new Uint8Array(0)]) {
      expect(() => cache.import(bad)).toThrow(DerError);
      expect(() => cache.import(bad)).toThrow(DerError);
    }
    expect(cache.size).toBe(before);
  });

  it('is bounded: the least recently used key is dropped (and imported afresh if it comes back)', () => {
    const cache = new RecipientKeyCache(2);
    const keys = Array.from({ length: 3 }, () => new Uint8Array(generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'der', type: 'spki' })));
    const first = cache.import(keys[0]!);
    cache.import(keys[1]!);
    cache.import(keys[2]!);
    expect(cache.size).toBe(2);
    const again = cache.import(keys[0]!);
    expect(again).not.toBe(first);
    expect(jwkOf(again)).toEqual(jwkOf(first));
    expect(cache.size).toBe(2);
  });
});
