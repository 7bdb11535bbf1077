/**
 * The agent opens released items with node:crypto (enclave-agent/release-envelope.ts) instead of jose: it must
 * accept exactly what the broker produces (jose's CompactEncrypt around jose's CompactSign) and refuse every
 * other shape a relay could send: other algorithms, compression, critical extensions, altered bytes, another
 * recipient or signer, loose base64url.
 */
import { describe, expect, it } from 'vitest';
import { constants, createCipheriv, generateKeyPairSync, publicEncrypt, randomBytes, sign, type KeyObject } from 'node:crypto';
import { CompactEncrypt, CompactSign, compactDecrypt } from 'jose';
import { decryptCompactJwe, openReleaseEnvelope, ReleaseEnvelopeError, verifyCompactJws } from '../../enclave-agent/release-envelope.js';

const enclave = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherEnclave = generateKeyPairSync('rsa', { modulusLength: 2048 });
const broker = generateKeyPairSync('ed25519');
const otherBroker = generateKeyPairSync('ed25519');
const CLAIMS = JSON.stringify({ iss: 'keygate', sub: 'db', val: Buffer.from('s3cret').toString('base64url') });

const b64u = (v: string | Uint8Array): string => Buffer.from(v).toString('base64url');

/** What the broker sends (broker/release.ts #seal): jose's JWS inside jose's JWE. */
async function brokerEnvelope(recipient: KeyObject = enclave.publicKey): Promise<{ jwe: string; jws: string }> {
  const jws = await new CompactSign(new TextEncoder().encode(CLAIMS)).setProtectedHeader({ alg: 'EdDSA', kid: 'broker-1', typ: 'keygate-release+jws' }).sign(broker.privateKey);
  const jwe = await new CompactEncrypt(new TextEncoder().encode(jws)).setProtectedHeader({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: 'keygate-release+jws', kid: 'db' }).encrypt(recipient);
  return { jwe, jws };
}

/** A JWE built by hand, to reach shapes jose would not produce. */
function handJwe(plaintext: string, options: { header?: Record<string, unknown>; cek?: Buffer; ivBytes?: number; recipient?: KeyObject; oaepHash?: string } = {}): string {
  const header = b64u(JSON.stringify(options.header ?? { alg: 'RSA-OAEP-256', enc: 'A256GCM' }));
  const cek = options.cek ?? randomBytes(32);
  const iv = randomBytes(options.ivBytes ?? 12);
  const encryptedKey = publicEncrypt({ key: options.recipient ?? enclave.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: options.oaepHash ?? 'sha256' }, cek);
  const cipher = createCipheriv(cek.length === 16 ? 'aes-128-gcm' : 'aes-256-gcm', cek, iv, { authTagLength: 16 });
  cipher.setAAD(Buffer.from(header, 'ascii'));
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return [header, b64u(encryptedKey), b64u(iv), b64u(ciphertext), b64u(cipher.getAuthTag())].join('.');
}

/** A JWS built by hand. */
function handJws(header: Record<string, unknown>, payload: string, key: KeyObject = broker.privateKey): string {
  const input = `${b64u(JSON.stringify(header))}.${b64u(payload)}`;
  return `${input}.${b64u(sign(null, Buffer.from(input), key))}`;
}

/** Flips one bit in the decoded bytes of part `index` of a compact serialisation. */
function flip(compact: string, index: number): string {
  const parts = compact.split('.');
  const bytes = Buffer.from(parts[index]!, 'base64url');
  bytes[bytes.length - 1]! ^= 1;
  parts[index] = b64u(bytes);
  return parts.join('.');
}

function refusal(fn: () => unknown): ReleaseEnvelopeError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(ReleaseEnvelopeError);
    expect((err as ReleaseEnvelopeError).code).toBe('UNTRUSTED_RESPONSE');
    return err as ReleaseEnvelopeError;
  }
  throw new Error('expected a ReleaseEnvelopeError');
}

describe('release envelope (node:crypto in place of jose)', () => {
  it('opens what the broker sends, with the same result as jose', async () => {
    const { jwe, jws } = await brokerEnvelope();
    expect(decryptCompactJwe(jwe, enclave.privateKey).toString('utf8')).toBe(jws);
    expect(new TextDecoder().decode((await compactDecrypt(jwe, enclave.privateKey)).plaintext)).toBe(jws);
    expect(openReleaseEnvelope(jwe, enclave.privateKey, broker.publicKey).toString('utf8')).toBe(CLAIMS);
    // A hand-built one of the same shape too (the reader is not tied to jose's byte layout).
    expect(openReleaseEnvelope(handJwe(jws), enclave.privateKey, broker.publicKey).toString('utf8')).toBe(CLAIMS);
  });

  it('refuses an answer for another enclave or signed by another key', async () => {
    const { jwe, jws } = await brokerEnvelope(otherEnclave.publicKey);
    expect(refusal(() => openReleaseEnvelope(jwe, enclave.privateKey, broker.publicKey)).message).toMatch(/authentication failed/);
    expect(refusal(() => openReleaseEnvelope(handJwe(jws), enclave.privateKey, otherBroker.publicKey)).message).toMatch(/signature does not verify/);
    const forged = handJws({ alg: 'EdDSA' }, CLAIMS, otherBroker.privateKey);
    expect(refusal(() => openReleaseEnvelope(handJwe(forged), enclave.privateKey, broker.publicKey)).message).toMatch(/signature does not verify/);
  });

  it.each([
    ['protected header (the AAD)', 0],
    ['encrypted key', 1],
    ['IV', 2],
    ['ciphertext', 3],
    ['tag', 4],
  ])('refuses a JWE with one bit of its %s changed', async (_what, index) => {
    const { jwe } = await brokerEnvelope();
    const altered = flip(jwe, index);
    expect(altered).not.toBe(jwe);
    expect(refusal(() => decryptCompactJwe(altered, enclave.privateKey))).toBeInstanceOf(ReleaseEnvelopeError);
  });

  it('a failed key unwrap looks like a failed tag (no oracle on the RSA step)', async () => {
    const { jws } = await brokerEnvelope();
    const sha1 = handJwe(jws, { oaepHash: 'sha1' });
    const shortKey = handJwe(jws, { cek: randomBytes(16) });
    const tag = flip(handJwe(jws), 4);
    const messages = [sha1, shortKey, tag].map((jwe) => refusal(() => decryptCompactJwe(jwe, enclave.privateKey)).message);
    expect(new Set(messages)).toEqual(new Set(['JWE does not decrypt for this key (authentication failed)']));
  });

  it.each([
    ['alg RSA-OAEP (SHA-1)', { alg: 'RSA-OAEP', enc: 'A256GCM' }, /alg is not RSA-OAEP-256/],
    ['alg dir', { alg: 'dir', enc: 'A256GCM' }, /alg is not RSA-OAEP-256/],
    ['no alg', { enc: 'A256GCM' }, /alg is not RSA-OAEP-256/],
    ['enc A128GCM', { alg: 'RSA-OAEP-256', enc: 'A128GCM' }, /enc is not A256GCM/],
    ['enc A256CBC-HS512', { alg: 'RSA-OAEP-256', enc: 'A256CBC-HS512' }, /enc is not A256GCM/],
    ['zip DEF', { alg: 'RSA-OAEP-256', enc: 'A256GCM', zip: 'DEF' }, /compressed/],
    ['crit', { alg: 'RSA-OAEP-256', enc: 'A256GCM', crit: ['exp'], exp: 1 }, /critical extensions/],
  ])('refuses a JWE header with %s', async (_what, header, message) => {
    const { jws } = await brokerEnvelope();
    expect(refusal(() => decryptCompactJwe(handJwe(jws, { header }), enclave.privateKey)).message).toMatch(message);
  });

  it('refuses malformed JWE serialisations', async () => {
    const { jwe, jws } = await brokerEnvelope();
    const parts = jwe.split('.');
    const cases: Array<[string, RegExp]> = [
      [parts.slice(0, 4).join('.'), /five parts/],
      [`${jwe}.AAAA`, /five parts/],
      [['bm90IGpzb24', ...parts.slice(1)].join('.'), /not JSON/],
      [[b64u('[1,2]'), ...parts.slice(1)].join('.'), /not a JSON object/],
      [[b64u('null'), ...parts.slice(1)].join('.'), /not a JSON object/],
      [[`${parts[0]}=`, ...parts.slice(1)].join('.'), /not base64url/],
      [[parts[0], parts[1], `${parts[2]}+`, parts[3], parts[4]].join('.'), /not base64url/],
      [[parts[0], parts[1], parts[2], `${parts[3]}A`, parts[4]].join('.'), /not base64url|authentication failed/],
      [[parts[0], '', parts[2], parts[3], parts[4]].join('.'), /no encrypted key/],
      [[parts[0], parts[1], parts[2], parts[3], b64u(Buffer.from(parts[4]!, 'base64url').subarray(0, 12))].join('.'), /tag is not 128 bits/],
      [handJwe(jws, { ivBytes: 16 }), /IV is not 96 bits/],
    ];
    for (const [input, message] of cases) expect(refusal(() => decryptCompactJwe(input, enclave.privateKey)).message, input.slice(0, 40)).toMatch(message);
  });

  it.each([
    ['alg none (unsigned)', (): string => `${b64u(JSON.stringify({ alg: 'none' }))}.${b64u(CLAIMS)}.`, /alg is not EdDSA/],
    ['alg HS256', (): string => handJws({ alg: 'HS256' }, CLAIMS), /alg is not EdDSA/],
    ['crit b64 (unencoded payload)', (): string => handJws({ alg: 'EdDSA', b64: false, crit: ['b64'] }, CLAIMS), /critical extensions/],
    ['two parts', (): string => handJws({ alg: 'EdDSA' }, CLAIMS).split('.').slice(0, 2).join('.'), /three parts/],
    ['an altered payload', (): string => flip(handJws({ alg: 'EdDSA' }, CLAIMS), 1), /signature does not verify/],
    ['an altered header', (): string => flip(handJws({ alg: 'EdDSA', kid: 'k' }, CLAIMS), 0), /not JSON|signature does not verify/],
    ['a truncated signature', (): string => { const p = handJws({ alg: 'EdDSA' }, CLAIMS).split('.'); return `${p[0]}.${p[1]}.${b64u(Buffer.from(p[2]!, 'base64url').subarray(0, 63))}`; }, /signature does not verify/],
    ['padding in the payload', (): string => { const p = handJws({ alg: 'EdDSA' }, `${CLAIMS} `).split('.'); return `${p[0]}.${p[1]}=.${p[2]}`; }, /not base64url/],
  ])('refuses a JWS with %s', (_what, make, message) => {
    expect(refusal(() => verifyCompactJws(make(), broker.publicKey)).message).toMatch(message);
  });
});
