/**
 * Attacks on the agent's reader of KMS's CiphertextForRecipient
 * (enclave-agent/cms.ts) with fast-check: real EnvelopedData built by the KMS
 * test server's encoder and by OpenSSL, then truncated, flipped, re-encoded
 * (definite/indefinite lengths, long-form lengths, other chunkings), given
 * wrong lengths, wrong algorithm identifiers, several recipients, wrong IVs,
 * bad padding and huge declared lengths.
 *
 * The properties: the reader only ever fails with a CmsError; it never
 * returns a value for a mutated structure, except for an encoding that
 * decodes to the same envelope, and then the value is the original.
 *
 * What the reader cannot see: AES-CBC is not authenticated, so a change to
 * the IV or the encrypted content bytes can decrypt (with valid padding) to
 * other bytes. Those bytes are protected by the broker's signature over the
 * claims that carry the CMS (bound to this enclave's document and nonce), not
 * by this reader; the property for them is only "no crash".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { spawnSync } from 'node:child_process';
import { constants, createCipheriv, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CmsError, decryptRecipientEnvelope, MAX_CMS_BYTES, type CmsErrorCode } from '../../enclave-agent/cms.js';
import { buildRecipientEnvelope, der, OIDS } from '../support/recipient-cms.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const VALUE = Buffer.from('attack-at-dawn: the value only the enclave may read, longer than one AES block');

/** What the reader did: the value, or the CmsError code. Anything else is rethrown (a test failure). */
function outcome(bytes: Uint8Array): { value: Buffer } | { code: CmsErrorCode } {
  try {
    return { value: Buffer.from(decryptRecipientEnvelope(bytes, privateKey)) };
  } catch (err) {
    if (err instanceof CmsError) return { code: err.code };
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------------
// A BER walker and encoder of the test's own (not the reader's), for locating and re-encoding elements.

interface El {
  tag: number;
  /** Offset of the identifier octet, of the contents, and just past the element. */
  start: number;
  contentStart: number;
  end: number;
  indefinite: boolean;
  children?: El[];
}

function walk(buf: Uint8Array, pos: number): El {
  const tag = buf[pos]!;
  const first = buf[pos + 1]!;
  const constructed = (tag & 0x20) !== 0;
  if (first === 0x80) {
    const children: El[] = [];
    let p = pos + 2;
    while (!(buf[p] === 0 && buf[p + 1] === 0)) {
      const c = walk(buf, p);
      children.push(c);
      p = c.end;
    }
    return { tag, start: pos, contentStart: pos + 2, end: p + 2, indefinite: true, children };
  }
  let len = first;
  let p = pos + 2;
  if (first & 0x80) {
    len = 0;
    for (let i = 0; i < (first & 0x7f); i++) len = len * 256 + buf[p++]!;
  }
  const el: El = { tag, start: pos, contentStart: p, end: p + len, indefinite: false };
  if (constructed) {
    el.children = [];
    for (let q = p; q < p + len; ) {
      const c = walk(buf, q);
      el.children.push(c);
      q = c.end;
    }
  }
  return el;
}

function all(el: El): El[] {
  return [el, ...(el.children ?? []).flatMap(all)];
}

/** How one element's length is written when re-encoding. */
type LengthForm = 'short' | 'long' | 'indefinite';

function lengthBytes(n: number, form: LengthForm): Buffer {
  if (form === 'short' && n < 0x80) return Buffer.of(n);
  // Long form, one byte longer than needed when it fits (non-minimal, which BER allows).
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  if (form === 'long' || bytes.length === 0) bytes.unshift(0);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Re-encodes `el` from `buf`, choosing each element's length form with `pick` (indefinite only for constructed ones). */
function encode(buf: Uint8Array, el: El, pick: () => LengthForm): Buffer {
  if (!el.children) {
    const content = buf.subarray(el.contentStart, el.end);
    const form = pick();
    return Buffer.concat([Buffer.of(el.tag), lengthBytes(content.length, form === 'indefinite' ? 'long' : form), content]);
  }
  const form = pick();
  const inner = Buffer.concat(el.children.map((c) => encode(buf, c, pick)));
  if (form === 'indefinite') return Buffer.concat([Buffer.of(el.tag, 0x80), inner, Buffer.of(0, 0)]);
  return Buffer.concat([Buffer.of(el.tag), lengthBytes(inner.length, form), inner]);
}

/** Where things are in one valid envelope. */
interface Sample {
  readonly name: string;
  readonly ber: Buffer;
  readonly value: Buffer;
  readonly root: El;
  /** Byte ranges of the IV and of the encrypted content: what AES-CBC, not the structure, protects. */
  readonly payload: ReadonlyArray<readonly [number, number]>;
  /** The same ranges, each content chunk's from its header on: where an insertion can add content (a whole new chunk). */
  readonly insertable: ReadonlyArray<readonly [number, number]>;
  readonly content: El;
  readonly recipients: El;
  readonly contentAlg: El;
}

function sample(name: string, ber: Buffer, value: Buffer): Sample {
  const root = walk(ber, 0);
  const enveloped = root.children![1]!.children![0]!;
  const [, recipients, eci] = enveloped.children!;
  const contentAlg = eci!.children![1]!;
  const iv = contentAlg.children![1]!;
  const content = eci!.children![2]!;
  const chunks = content.children ? all(content).filter((e) => !e.children) : [content];
  const ivRange = [iv.contentStart, iv.end] as const;
  return {
    name, ber, value, root, content, recipients: recipients!, contentAlg,
    payload: [ivRange, ...chunks.map((c) => [c.contentStart, c.end] as const)],
    insertable: [ivRange, ...chunks.map((c) => [c.start, c.end] as const)],
  };
}

const inPayload = (s: Sample, i: number): boolean => s.payload.some(([a, b]) => i >= a && i < b);

const samples: Sample[] = [];
let dir: string;

beforeAll(() => {
  samples.push(sample('KMS test server, 16-byte chunks', buildRecipientEnvelope(VALUE, publicKey, { chunk: 16 }).ber, VALUE));
  samples.push(sample('KMS test server, one chunk', buildRecipientEnvelope(VALUE, publicKey, { chunk: 4096 }).ber, VALUE));
  // OpenSSL's own streamed BER EnvelopedData (an independent encoder).
  dir = mkdtempSync(join(tmpdir(), 'keygate-cms-attack-'));
  writeFileSync(join(dir, 'key.pem'), privateKey.export({ format: 'pem', type: 'pkcs8' }));
  writeFileSync(join(dir, 'value.bin'), VALUE);
  const run = (args: string[]): void => {
    const r = spawnSync('openssl', args, { cwd: dir });
    if (r.error || r.status !== 0) throw new Error(`openssl ${args[0]} failed: ${r.error?.message ?? r.stderr.toString()}`);
  };
  run(['req', '-x509', '-new', '-key', 'key.pem', '-subj', '/CN=enclave', '-days', '1', '-addext', `subjectKeyIdentifier=${randomBytes(32).toString('hex').replace(/(..)(?!$)/g, '$1:')}`, '-out', 'cert.pem']);
  run(['cms', '-encrypt', '-stream', '-outform', 'DER', '-binary', '-aes-256-cbc', '-keyid', '-recip', 'cert.pem', '-keyopt', 'rsa_padding_mode:oaep', '-keyopt', 'rsa_oaep_md:sha256', '-keyopt', 'rsa_mgf1_md:sha256', '-in', 'value.bin', '-out', 'openssl.ber']);
  samples.push(sample('OpenSSL cms -encrypt -stream', readFileSync(join(dir, 'openssl.ber')), VALUE));
  for (const s of samples) expect(outcome(s.ber), s.name).toEqual({ value: VALUE });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const anySample = fc.constantFrom(...[0, 1, 2]).map((i) => samples[i]!);

describe('mutations of the structure never yield a value other than the original', () => {
  it('every truncation is refused (CMS_MALFORMED)', () => {
    for (const s of samples) {
      for (let n = 0; n < s.ber.length; n++) expect(outcome(s.ber.subarray(0, n))).toEqual({ code: 'CMS_MALFORMED' });
    }
  });

  it('a byte changed outside the IV and the encrypted content: a CmsError, or (an equivalent byte such as the unchecked key id) the original value', () => {
    fc.assert(
      fc.property(anySample, fc.nat(), fc.integer({ min: 1, max: 255 }), (s, at, x) => {
        const positions = [...s.ber.keys()].filter((i) => !inPayload(s, i));
        const i = positions[at % positions.length]!;
        const b = Buffer.from(s.ber);
        b[i]! ^= x;
        const r = outcome(b);
        if ('value' in r) expect(r.value).toEqual(s.value);
      }),
      { numRuns: 3000 },
    );
  });

  /**
   * Insertions that add whole content chunks through a chunk's header, for the property below: a new 16-byte chunk
   * before the first one, and (in the one-chunk envelope) a new length and 15 bytes after the chunk's tag, which makes
   * the chunk 16 bytes longer. Both decrypt to other bytes with valid padding. fast-check draws such an insertion very
   * rarely (none in 4 million runs), so they are always run as examples: they keep the exclusion below wide enough.
   */
  const insertedChunks = (): Array<[Sample, number, number, Uint8Array]> => {
    const chunked = samples[0]!;
    const single = samples[1]!;
    const only = single.content.children![0]!;
    expect(only.end - only.contentStart).toBe(0x50);
    return [
      [chunked, chunked.content.children![0]!.start, 1, der(0x04, randomBytes(16))],
      [single, only.start + 1, 1, Buffer.concat([Buffer.of(0x60), randomBytes(15)])],
    ];
  };

  it('bytes inserted or deleted anywhere: a CmsError, or the original value', () => {
    fc.assert(
      fc.property(anySample, fc.nat(), fc.integer({ min: 1, max: 40 }), fc.uint8Array({ minLength: 0, maxLength: 40 }), (s, at, del, ins) => {
        const i = at % s.ber.length;
        const b = Buffer.concat([s.ber.subarray(0, i), ins, s.ber.subarray(Math.min(s.ber.length, i + (ins.length ? 0 : del)))]);
        if (b.equals(s.ber)) return;
        const r = outcome(b);
        // An edit that reaches into the IV or the content changes what AES-CBC decrypts: the reader only must not crash.
        // That includes a deletion starting before a chunk's contents (a whole 16-byte chunk removed with its header
        // leaves a well-formed envelope whose next block decrypts to other bytes, with the padding still valid), and an
        // insertion anywhere in a chunk's header (a whole chunk added before it, or a longer length and more bytes
        // after its tag; see insertedChunks). Insertions elsewhere, and deletions within a header, stay checked.
        const editEnd = ins.length ? i : i + del;
        const touchesPayload = (ins.length ? s.insertable : s.payload).some(([a, z]) => i <= z && editEnd >= a);
        if ('value' in r && !touchesPayload) expect(r.value).toEqual(s.value);
      }),
      { numRuns: 2000, examples: insertedChunks() },
    );
  });

  it('what the property above excludes, shown: a whole middle chunk removed decrypts to other bytes (AES-CBC is not authenticated)', () => {
    const s = samples[0]!;
    const chunks = s.content.children!;
    expect(chunks.length).toBeGreaterThanOrEqual(4);
    const gone = chunks[1]!;
    const r = outcome(Buffer.concat([s.ber.subarray(0, gone.start), s.ber.subarray(gone.end)]));
    // The last two blocks are untouched, so the padding stays valid: the reader returns a value 16 bytes shorter that
    // differs from the original. The broker's signature over the claims carrying the CMS is what refuses this.
    expect('value' in r && r.value.length).toBe(s.value.length - 16);
    expect('value' in r && r.value.equals(s.value)).toBe(false);
  });

  it('what the property above excludes, shown: a chunk added through a chunk\'s header decrypts to other bytes, 16 bytes longer', () => {
    for (const [s, at, , ins] of insertedChunks()) {
      const r = outcome(Buffer.concat([s.ber.subarray(0, at), ins, s.ber.subarray(at)]));
      expect('value' in r && r.value.length, s.name).toBe(s.value.length + 16);
      expect('value' in r && r.value.equals(s.value), s.name).toBe(false);
    }
  });

  it('a wrong length on any element (shorter, longer, huge, indefinite on a primitive): refused', () => {
    fc.assert(
      fc.property(
        anySample,
        fc.nat(),
        fc.oneof(fc.integer({ min: -40, max: 40 }).filter((d) => d !== 0), fc.constantFrom(0x7fffffff, 0xffffffff, 0x100000, MAX_CMS_BYTES + 1)),
        (s, at, change) => {
          const els = all(s.root).filter((e) => !e.indefinite);
          const el = els[at % els.length]!;
          const length = el.end - el.contentStart;
          const wanted = change > 0x1000 ? change : length + change;
          if (wanted < 0) return;
          const b = Buffer.concat([s.ber.subarray(0, el.start + 1), lengthBytes(wanted, 'long'), s.ber.subarray(el.contentStart)]);
          const r = outcome(b);
          if ('value' in r) {
            // Only a change inside the content can still parse (a chunk's length moved into its neighbour's bytes).
            expect(inPayload(s, el.contentStart) || el === s.content).toBe(true);
          } else expect(['CMS_MALFORMED', 'CMS_UNSUPPORTED', 'CMS_WRONG_RECIPIENT', 'CMS_DECRYPT_FAILED']).toContain(r.code);
        },
      ),
      { numRuns: 1500 },
    );
    // An indefinite length on a primitive element.
    for (const s of samples) {
      for (const el of all(s.root).filter((e) => !e.children)) {
        const b = Buffer.concat([s.ber.subarray(0, el.start + 1), Buffer.of(0x80), s.ber.subarray(el.contentStart, el.end), Buffer.of(0, 0), s.ber.subarray(el.end)]);
        expect(outcome(b)).toEqual({ code: 'CMS_MALFORMED' });
      }
    }
  });

  it('encodings that mean the same envelope (definite or indefinite lengths, long-form lengths, other content chunkings) give exactly the original value', () => {
    fc.assert(
      fc.property(anySample, fc.array(fc.constantFrom<LengthForm>('short', 'long', 'indefinite'), { minLength: 1, maxLength: 64 }), fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 8 }), (s, forms, sizes) => {
        let k = 0;
        const pick = (): LengthForm => forms[k++ % forms.length]!;
        // The content re-chunked: the same ciphertext in chunks of the given sizes, inside an indefinite [0].
        const ciphertext = Buffer.concat(s.payload.slice(1).map(([a, z]) => s.ber.subarray(a, z)));
        const chunks: Buffer[] = [];
        for (let p = 0, j = 0; p < ciphertext.length; j++) {
          const n = sizes[j % sizes.length]!;
          chunks.push(der(0x04, ciphertext.subarray(p, p + n)));
          p += n;
        }
        const rechunked = Buffer.concat([Buffer.of(0xa0, 0x80), ...chunks, Buffer.of(0, 0)]);
        expect(outcome(encode(s.ber, s.root, pick))).toEqual({ value: s.value });
        expect(outcome(Buffer.concat([s.ber.subarray(0, s.content.start), rechunked, s.ber.subarray(s.content.end)]))).toEqual({ value: s.value });
      }),
      { numRuns: 300 },
    );
  });
});

describe('what KMS Recipient mode does not use is refused', () => {
  const OTHER_OIDS = [
    '2a864886f70d010101', // rsaEncryption (PKCS#1 v1.5 key transport)
    '2a864886f70d01010a', // RSASSA-PSS
    '2b0e03021a', // SHA-1
    '608648016503040202', // SHA-384
    '608648016503040203', // SHA-512
    '608648016503040102', // AES-128-CBC
    '608648016503040116', // AES-192-CBC
    '60864801650304012e', // AES-256-GCM
    '2a864886f70d0307', // DES-EDE3-CBC
    '2a864886f70d010702', // signedData
    '2a864886f70d010706', // encryptedData
    '2a864886f70d010107', // RSAES-OAEP (in the wrong place)
    '2a864886f70d010108', // MGF1 (in the wrong place)
  ];

  it('any algorithm identifier or content type replaced by another (or by junk): CMS_UNSUPPORTED or CMS_MALFORMED, never a value', () => {
    fc.assert(
      fc.property(anySample, fc.nat(), fc.oneof(fc.constantFrom(...OTHER_OIDS, OIDS.sha256, OIDS.aes256Cbc, OIDS.data), fc.uint8Array({ minLength: 1, maxLength: 12 }).map((u) => Buffer.from(u).toString('hex'))), (s, at, replacement) => {
        const oids = all(s.root).filter((e) => e.tag === 0x06);
        const el = oids[at % oids.length]!;
        const original = s.ber.subarray(el.contentStart, el.end).toString('hex');
        const b = Buffer.concat([s.ber.subarray(0, el.start), der(0x06, Buffer.from(replacement, 'hex')), s.ber.subarray(el.end)]);
        const r = outcome(b);
        if (replacement === original) expect(r).toEqual({ value: s.value });
        else expect(['CMS_UNSUPPORTED', 'CMS_MALFORMED']).toContain('code' in r ? r.code : 'A VALUE');
      }),
      { numRuns: 800 },
    );
  });

  it('several recipients (copies of the right one, in any position): CMS_UNSUPPORTED', () => {
    fc.assert(
      fc.property(anySample, fc.integer({ min: 2, max: 6 }), (s, n) => {
        const ktri = s.ber.subarray(s.recipients.children![0]!.start, s.recipients.children![0]!.end);
        const set = der(0x31, Buffer.concat(Array(n).fill(ktri)));
        const b = Buffer.concat([s.ber.subarray(0, s.recipients.start), set, s.ber.subarray(s.recipients.end)]);
        expect(outcome(b)).toEqual({ code: 'CMS_UNSUPPORTED' });
      }),
      { numRuns: 30 },
    );
  });

  it('an IV of any length but 16 bytes: CMS_MALFORMED', () => {
    fc.assert(
      fc.property(anySample, fc.integer({ min: 0, max: 64 }).filter((n) => n !== 16), (s, n) => {
        const alg = s.contentAlg;
        const replaced = der(0x30, Buffer.concat([s.ber.subarray(alg.children![0]!.start, alg.children![0]!.end), der(0x04, randomBytes(n))]));
        const b = Buffer.concat([s.ber.subarray(0, alg.start), replaced, s.ber.subarray(alg.end)]);
        expect(outcome(b)).toEqual({ code: 'CMS_MALFORMED' });
      }),
      { numRuns: 100 },
    );
  });

  it('content whose PKCS#7 padding is invalid (right key, right IV): CMS_DECRYPT_FAILED', () => {
    const invalidPadding = (block: Uint8Array): boolean => {
      const n = block[15]!;
      return n === 0 || n > 16 || block.subarray(16 - n).some((x) => x !== n);
    };
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), fc.uint8Array({ minLength: 16, maxLength: 16 }).filter(invalidPadding), (head, last) => {
        const plain = Buffer.concat([head.subarray(0, head.length - (head.length % 16)), last]);
        const cek = randomBytes(32);
        const iv = randomBytes(16);
        const raw = createCipheriv('aes-256-cbc', cek, iv).setAutoPadding(false);
        const content = Buffer.concat([raw.update(plain), raw.final()]);
        // The same envelope with this content: built by the KMS test server's encoder, then its key and content swapped in.
        const built = buildRecipientEnvelope(Buffer.alloc(1), publicKey, { chunk: 4096 });
        const s = sample('padding', built.ber, Buffer.alloc(1));
        const ivEl = s.contentAlg.children![1]!;
        const chunk = s.content.children![0]!;
        // Encrypt the content key again for this content (OAEP to the enclave's key, as KMS does).
        const encryptedKey = s.recipients.children![0]!.children![3]!;
        const ek = publicEncrypt({ key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);
        const parts = [
          built.ber.subarray(0, encryptedKey.contentStart), ek, built.ber.subarray(encryptedKey.end, ivEl.contentStart), iv,
          built.ber.subarray(ivEl.end, chunk.start), der(0x04, content), built.ber.subarray(chunk.end),
        ];
        expect(outcome(Buffer.concat(parts))).toEqual({ code: 'CMS_DECRYPT_FAILED' });
      }),
      { numRuns: 60 },
    );
  });
});

describe('bounded work on hostile input', () => {
  it('huge declared lengths and chunk bombs up to the size limit: refused fast, memory bounded by the input', () => {
    const before = process.memoryUsage();
    const started = performance.now();
    // A maximal input: every element's length claims up to 4 GiB.
    const base = buildRecipientEnvelope(randomBytes(4000), publicKey, { chunk: 64 }).ber;
    const s = sample('big', base, Buffer.alloc(0));
    for (const el of all(s.root).filter((e) => !e.indefinite)) {
      const b = Buffer.concat([base.subarray(0, el.start + 1), Buffer.of(0x84, 0xff, 0xff, 0xff, 0xff), base.subarray(el.contentStart)]);
      expect(outcome(b)).toEqual({ code: 'CMS_MALFORMED' });
    }
    // 256 KiB of nested constructed chunks (each level a constructed OCTET STRING of the next): refused or decrypted, never more than the input copied.
    const leaf = der(0x04, Buffer.alloc(16));
    let bomb: Buffer = leaf;
    for (let depth = 0; depth < 14; depth++) bomb = Buffer.concat([Buffer.of(0x24, 0x80), bomb, bomb, Buffer.of(0, 0)]);
    bomb = bomb.subarray(0, Math.min(bomb.length, MAX_CMS_BYTES - 1024));
    const content = Buffer.concat([Buffer.of(0xa0, 0x80), bomb, Buffer.of(0, 0)]);
    const big = Buffer.concat([base.subarray(0, s.content.start), content, base.subarray(s.content.end)]);
    expect(outcome(big)).toEqual({ code: 'CMS_MALFORMED' });
    // One byte over the limit is refused before it is read.
    expect(outcome(Buffer.concat([base, Buffer.alloc(MAX_CMS_BYTES + 1 - base.length)]))).toEqual({ code: 'CMS_MALFORMED' });
    const grown = process.memoryUsage().arrayBuffers - before.arrayBuffers;
    expect(grown).toBeLessThan(64 * 1024 * 1024);
    expect(performance.now() - started).toBeLessThan(30_000);
  });
});
