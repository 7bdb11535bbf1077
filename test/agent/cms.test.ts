/**
 * The agent's reader of KMS's CiphertextForRecipient (enclave-agent/cms.ts):
 * round trips with the KMS test server's encoder, a cross-check against
 * OpenSSL's independent CMS implementation on the same bytes (both
 * directions), one test per refusal with its exact code, and fast-check
 * mutations that must only ever end in a CmsError.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { constants, createCipheriv, generateKeyPairSync, publicEncrypt, randomBytes, type KeyObject } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CmsError, decryptRecipientEnvelope, parseRecipientEnvelope, type CmsErrorCode } from '../../enclave-agent/cms.js';
import { buildRecipientEnvelope, der, indefinite, OIDS } from '../support/recipient-cms.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
const VALUE = Buffer.from('correct horse battery staple: the value only the enclave may read');

function codeOf(fn: () => unknown): CmsErrorCode {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CmsError);
    return (err as CmsError).code;
  }
  throw new Error('expected a CmsError');
}

const seq = (...c: Uint8Array[]): Buffer => der(0x30, Buffer.concat(c));
const oid = (hex: string): Buffer => der(0x06, Buffer.from(hex, 'hex'));
const int = (n: number): Buffer => der(0x02, Buffer.of(n));
const octets = (b: Uint8Array): Buffer => der(0x04, b);
const NULL = Buffer.of(0x05, 0x00);

/** Every part of the envelope, each overridable, to build one wrong thing at a time. */
interface Parts {
  envelopedOid: Buffer;
  version: Buffer;
  originatorInfo?: Buffer;
  ktriTag?: number;
  ktriVersion: Buffer;
  rid: Buffer;
  keyAlg: Buffer;
  encryptedKey: Buffer;
  extraRecipient?: Buffer;
  dataOid: Buffer;
  contentAlg: Buffer;
  content: Buffer | null;
  unprotectedAttrs?: Buffer;
  trailing?: Buffer;
}

function parts(plaintext: Uint8Array = VALUE, key: KeyObject = publicKey, over: Partial<Parts> = {}, cek = randomBytes(32), iv = randomBytes(16)): Parts {
  const cipher = createCipheriv(cek.length === 16 ? 'aes-128-cbc' : 'aes-256-cbc', cek, iv);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const sha256 = seq(oid(OIDS.sha256));
  return {
    envelopedOid: oid(OIDS.envelopedData),
    version: int(2),
    ktriVersion: int(2),
    rid: der(0x80, randomBytes(32)),
    keyAlg: seq(oid(OIDS.rsaesOaep), seq(der(0xa0, sha256), der(0xa1, seq(oid(OIDS.mgf1), sha256)))),
    encryptedKey: octets(publicEncrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek)),
    dataOid: oid(OIDS.data),
    contentAlg: seq(oid(OIDS.aes256Cbc), octets(iv)),
    content: der(0x80, ct),
    ...over,
  };
}

function assemble(p: Parts): Buffer {
  const ktri = der(p.ktriTag ?? 0x30, Buffer.concat([p.ktriVersion, p.rid, p.keyAlg, p.encryptedKey]));
  const env = indefinite(
    0x30,
    p.version,
    ...(p.originatorInfo ? [p.originatorInfo] : []),
    der(0x31, Buffer.concat([ktri, ...(p.extraRecipient ? [p.extraRecipient] : [])])),
    indefinite(0x30, p.dataOid, p.contentAlg, ...(p.content ? [p.content] : [])),
    ...(p.unprotectedAttrs ? [p.unprotectedAttrs] : []),
  );
  return Buffer.concat([indefinite(0x30, p.envelopedOid, indefinite(0xa0, env)), p.trailing ?? Buffer.alloc(0)]);
}

describe('reading KMS CiphertextForRecipient', () => {
  it('decrypts what the KMS test server builds, for values of many sizes and chunkings', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 3000 }), fc.integer({ min: 1, max: 2048 }), (value, chunk) => {
        const { ber } = buildRecipientEnvelope(value, publicKey, { chunk });
        expect(Buffer.from(decryptRecipientEnvelope(ber, privateKey))).toEqual(Buffer.from(value));
      }),
      { numRuns: 40 },
    );
  });

  it('accepts the content primitive, chunked, or in nested chunks, and SHA-256 parameters absent or NULL', () => {
    const cek = randomBytes(32);
    const iv = randomBytes(16);
    const base = parts(VALUE, publicKey, {}, cek, iv);
    const ct = base.content!.subarray(2); // short form: tag, length, contents
    const nested = indefinite(0xa0, octets(ct.subarray(0, 16)), indefinite(0x24, octets(ct.subarray(16, 32)), der(0x24, octets(ct.subarray(32)))));
    const withNull = seq(oid(OIDS.sha256), NULL);
    const keyAlg = seq(oid(OIDS.rsaesOaep), seq(der(0xa0, withNull), der(0xa1, seq(oid(OIDS.mgf1), withNull))));
    for (const variant of [base, { ...base, content: nested }, { ...base, keyAlg }]) {
      expect(Buffer.from(decryptRecipientEnvelope(assemble(variant), privateKey))).toEqual(VALUE);
    }
  });

  it('refuses a content key encrypted to another key: CMS_WRONG_RECIPIENT (a parent swapping in another enclave\'s ciphertext)', () => {
    const { ber } = buildRecipientEnvelope(VALUE, other.publicKey);
    expect(codeOf(() => decryptRecipientEnvelope(ber, privateKey))).toBe('CMS_WRONG_RECIPIENT');
    // The subjectKeyIdentifier is not what decides: ours on another key's ciphertext changes nothing.
    const { ber: labelled } = buildRecipientEnvelope(VALUE, other.publicKey, { subjectKeyIdentifier: parseRecipientEnvelope(buildRecipientEnvelope(VALUE, publicKey).ber).subjectKeyIdentifier });
    expect(codeOf(() => decryptRecipientEnvelope(labelled, privateKey))).toBe('CMS_WRONG_RECIPIENT');
  });

  it('refuses content that does not decrypt, and a content key of the wrong size: CMS_DECRYPT_FAILED', () => {
    const cek = randomBytes(32);
    const iv = randomBytes(16);
    const raw = createCipheriv('aes-256-cbc', cek, iv).setAutoPadding(false);
    const badPadding = Buffer.concat([raw.update(Buffer.alloc(32, 0x00)), raw.final()]); // last byte 0: never valid PKCS#7
    expect(codeOf(() => decryptRecipientEnvelope(assemble(parts(VALUE, publicKey, { content: der(0x80, badPadding) }, cek, iv)), privateKey))).toBe('CMS_DECRYPT_FAILED');
    expect(codeOf(() => decryptRecipientEnvelope(assemble(parts(VALUE, publicKey, {}, randomBytes(16))), privateKey))).toBe('CMS_DECRYPT_FAILED');
  });

  const ber = assemble(parts());
  const cases: Array<[string, Buffer, CmsErrorCode]> = [
    ['empty input', Buffer.alloc(0), 'CMS_MALFORMED'],
    ['truncated input', ber.subarray(0, ber.length - 3), 'CMS_MALFORMED'],
    ['trailing bytes', assemble(parts(VALUE, publicKey, { trailing: Buffer.of(0) })), 'CMS_MALFORMED'],
    ['a high tag number', Buffer.concat([Buffer.of(0x1f, 0x81, 0x00, 0x00)]), 'CMS_MALFORMED'],
    ['an indefinite length on a primitive', Buffer.of(0x04, 0x80, 0x00, 0x00), 'CMS_MALFORMED'],
    ['a 5-byte length', Buffer.of(0x30, 0x85, 0, 0, 0, 0, 1, 0x05, 0x00), 'CMS_MALFORMED'],
    ['a length past the end', Buffer.of(0x30, 0x84, 0x7f, 0xff, 0xff, 0xff), 'CMS_MALFORMED'],
    ['an end-of-contents marker outside an indefinite element', Buffer.of(0x30, 0x02, 0x00, 0x00), 'CMS_MALFORMED'],
    ['a malformed end-of-contents marker', Buffer.of(0x30, 0x80, 0x00, 0x01), 'CMS_MALFORMED'],
    ['no end-of-contents', Buffer.of(0x30, 0x80, 0x05, 0x00), 'CMS_MALFORMED'],
    ['deep nesting', Buffer.concat([Buffer.alloc(2000).fill(Buffer.of(0x30, 0x80)), Buffer.alloc(2000)]), 'CMS_MALFORMED'],
    ['more than 256 KiB', Buffer.alloc(256 * 1024 + 1), 'CMS_MALFORMED'],
    ['another content type (SignedData)', assemble(parts(VALUE, publicKey, { envelopedOid: oid('2a864886f70d010702') })), 'CMS_UNSUPPORTED'],
    ['EnvelopedData version 0', assemble(parts(VALUE, publicKey, { version: int(0) })), 'CMS_UNSUPPORTED'],
    ['an empty version INTEGER', assemble(parts(VALUE, publicKey, { version: der(0x02, Buffer.alloc(0)) })), 'CMS_MALFORMED'],
    ['originatorInfo', assemble(parts(VALUE, publicKey, { originatorInfo: der(0xa0, Buffer.alloc(0)) })), 'CMS_UNSUPPORTED'],
    ['unprotectedAttrs', assemble(parts(VALUE, publicKey, { unprotectedAttrs: der(0xa1, Buffer.alloc(0)) })), 'CMS_UNSUPPORTED'],
    ['two recipients', assemble(parts(VALUE, publicKey, { extraRecipient: seq(int(2), der(0x80, randomBytes(32)), parts().keyAlg, parts().encryptedKey) })), 'CMS_UNSUPPORTED'],
    ['a key-agreement recipient', assemble(parts(VALUE, publicKey, { ktriTag: 0xa1 })), 'CMS_UNSUPPORTED'],
    ['KeyTransRecipientInfo v0 (issuerAndSerialNumber)', assemble(parts(VALUE, publicKey, { ktriVersion: int(0) })), 'CMS_UNSUPPORTED'],
    ['an issuerAndSerialNumber rid', assemble(parts(VALUE, publicKey, { rid: seq(seq(), int(1)) })), 'CMS_MALFORMED'],
    ['a 20-byte subjectKeyIdentifier', assemble(parts(VALUE, publicKey, { rid: der(0x80, randomBytes(20)) })), 'CMS_MALFORMED'],
    ['RSA PKCS#1 v1.5 key transport', assemble(parts(VALUE, publicKey, { keyAlg: seq(oid('2a864886f70d010101'), NULL) })), 'CMS_UNSUPPORTED'],
    ['OAEP with the SHA-1 defaults', assemble(parts(VALUE, publicKey, { keyAlg: seq(oid(OIDS.rsaesOaep), seq()) })), 'CMS_UNSUPPORTED'],
    ['OAEP with only the MGF given (hash defaults to SHA-1)', assemble(parts(VALUE, publicKey, { keyAlg: seq(oid(OIDS.rsaesOaep), seq(der(0xa1, seq(oid(OIDS.mgf1), seq(oid(OIDS.sha256)))))) })), 'CMS_UNSUPPORTED'],
    ['OAEP with SHA-1', assemble(parts(VALUE, publicKey, { keyAlg: seq(oid(OIDS.rsaesOaep), seq(der(0xa0, seq(oid(OIDS.sha1))), der(0xa1, seq(oid(OIDS.mgf1), seq(oid(OIDS.sha256)))))) })), 'CMS_UNSUPPORTED'],
    ['MGF1 with SHA-1', assemble(parts(VALUE, publicKey, { keyAlg: seq(oid(OIDS.rsaesOaep), seq(der(0xa0, seq(oid(OIDS.sha256))), der(0xa1, seq(oid(OIDS.mgf1), seq(oid(OIDS.sha1)))))) })), 'CMS_UNSUPPORTED'],
    ['an OAEP label', assemble(parts(VALUE, publicKey, { keyAlg: seq(oid(OIDS.rsaesOaep), seq(der(0xa0, seq(oid(OIDS.sha256))), der(0xa1, seq(oid(OIDS.mgf1), seq(oid(OIDS.sha256)))), der(0xa2, seq()))) })), 'CMS_UNSUPPORTED'],
    ['hash parameters that are not NULL', assemble(parts(VALUE, publicKey, { keyAlg: seq(oid(OIDS.rsaesOaep), seq(der(0xa0, seq(oid(OIDS.sha256), int(1))), der(0xa1, seq(oid(OIDS.mgf1), seq(oid(OIDS.sha256)))))) })), 'CMS_MALFORMED'],
    ['a 128-byte encrypted key (RSA-1024)', assemble(parts(VALUE, publicKey, { encryptedKey: octets(randomBytes(128)) })), 'CMS_UNSUPPORTED'],
    ['another inner content type', assemble(parts(VALUE, publicKey, { dataOid: oid(OIDS.envelopedData) })), 'CMS_UNSUPPORTED'],
    ['AES-128-CBC content', assemble(parts(VALUE, publicKey, { contentAlg: seq(oid(OIDS.aes128Cbc), octets(randomBytes(16))) })), 'CMS_UNSUPPORTED'],
    ['an 8-byte IV', assemble(parts(VALUE, publicKey, { contentAlg: seq(oid(OIDS.aes256Cbc), octets(randomBytes(8))) })), 'CMS_MALFORMED'],
    ['content that is not whole blocks', assemble(parts(VALUE, publicKey, { content: der(0x80, randomBytes(33)) })), 'CMS_MALFORMED'],
    ['empty content', assemble(parts(VALUE, publicKey, { content: der(0x80, Buffer.alloc(0)) })), 'CMS_MALFORMED'],
    ['a content chunk that is not an OCTET STRING', assemble(parts(VALUE, publicKey, { content: der(0xa0, der(0x02, randomBytes(16))) })), 'CMS_MALFORMED'],
    ['detached content (no encryptedContent)', assemble(parts(VALUE, publicKey, { content: null })), 'CMS_MALFORMED'],
  ];
  it.each(cases)('refuses %s', (_what, bytes, code) => {
    expect(codeOf(() => decryptRecipientEnvelope(bytes, privateKey))).toBe(code);
  });

  it('never fails with anything but a CmsError under mutation (flips, truncations, insertions, random bytes)', () => {
    const valid = buildRecipientEnvelope(VALUE, publicKey, { chunk: 16 }).ber;
    const mutated = fc.oneof(
      fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
        const b = Buffer.from(valid);
        b[i]! ^= x;
        return b;
      }),
      fc.nat(valid.length - 1).map((n) => valid.subarray(0, n)),
      fc.tuple(fc.nat(valid.length), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([i, ins]) => Buffer.concat([valid.subarray(0, i), ins, valid.subarray(i)])),
      fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 1, max: 8 })).map(([i, n]) => Buffer.concat([valid.subarray(0, i), valid.subarray(i + n)])),
      fc.uint8Array({ maxLength: 600 }).map((b) => Buffer.from(b)),
    );
    fc.assert(
      fc.property(mutated, (bytes) => {
        try {
          decryptRecipientEnvelope(bytes, privateKey);
        } catch (err) {
          if (!(err instanceof CmsError)) throw err;
        }
      }),
      { numRuns: 400 },
    );
  });
});

describe('cross-check with OpenSSL (an independent CMS implementation) on the same bytes', () => {
  let dir: string;
  const openssl = (args: string[], input?: Buffer): { status: number | null; stdout: Buffer; stderr: string } => {
    const r = spawnSync('openssl', args, { cwd: dir, input, maxBuffer: 1 << 20 });
    if (r.error) throw new Error(`openssl is needed for this cross-check: ${r.error.message}`);
    return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
  };

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-cms-'));
    writeFileSync(join(dir, 'key.pem'), privateKey.export({ format: 'pem', type: 'pkcs8' }));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('OpenSSL decrypts what the KMS test server builds to the same value the agent reads', () => {
    const value = randomBytes(3000);
    const { ber } = buildRecipientEnvelope(value, publicKey, { chunk: 1000 });
    writeFileSync(join(dir, 'kms.ber'), ber);
    const r = openssl(['cms', '-decrypt', '-inform', 'DER', '-in', 'kms.ber', '-inkey', 'key.pem', '-binary']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toEqual(value);
    expect(Buffer.from(decryptRecipientEnvelope(ber, privateKey))).toEqual(value);
  });

  it('the agent decrypts what OpenSSL streams (BER, indefinite lengths, RSAES-OAEP-SHA-256 to a 32-byte key id, AES-256-CBC)', () => {
    const ski = randomBytes(32).toString('hex').replace(/(..)(?!$)/g, '$1:');
    expect(openssl(['req', '-x509', '-new', '-key', 'key.pem', '-subj', '/CN=enclave', '-days', '1', '-addext', `subjectKeyIdentifier=${ski}`, '-out', 'cert.pem']).status).toBe(0);
    const value = randomBytes(5000);
    writeFileSync(join(dir, 'value.bin'), value);
    const r = openssl([
      'cms', '-encrypt', '-stream', '-outform', 'DER', '-binary', '-aes-256-cbc', '-keyid', '-recip', 'cert.pem',
      '-keyopt', 'rsa_padding_mode:oaep', '-keyopt', 'rsa_oaep_md:sha256', '-keyopt', 'rsa_mgf1_md:sha256', '-in', 'value.bin', '-out', 'openssl.ber',
    ]);
    expect(r.status).toBe(0);
    const ber = readFileSync(join(dir, 'openssl.ber'));
    expect(ber.subarray(0, 2)).toEqual(Buffer.of(0x30, 0x80)); // BER, indefinite length, as KMS sends it
    const envelope = parseRecipientEnvelope(ber);
    expect(Buffer.from(envelope.subjectKeyIdentifier).toString('hex')).toBe(ski.replace(/:/g, ''));
    expect(Buffer.from(decryptRecipientEnvelope(ber, privateKey))).toEqual(value);
    // And OpenSSL's own envelope to another key is refused by the agent as not ours.
    expect(codeOf(() => decryptRecipientEnvelope(ber, other.privateKey))).toBe('CMS_WRONG_RECIPIENT');
  });
});
