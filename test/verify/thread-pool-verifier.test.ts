/**
 * Differential: createThreadPoolVerifier (signature checks on libuv's thread pool) against createVerifier (on the
 * calling thread) on real Nitro documents, generated NSM-style documents and their mutations, under random
 * options: the same verdict, the same error code, the same verified content, for every input. Plus what only the
 * asynchronous form can get wrong: many verifications in flight at once (each answer its own document's; most of
 * them find the pool's slots busy and check on the calling thread), a caller changing the document or the options
 * while a check is on the pool, and the bound on checks in flight.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { createVerifier, isAttestationError, type VerifiedDocument, type VerifyOptions } from '../../index.js';
import { createThreadPoolVerifier, type AsyncVerifier, type Verifier } from '../../broker/verify/verify.js';
import { PoolSlots } from '../../broker/verify/signature-check.js';
import { awsRootPem, fixtureBytes, negativeDocuments, realDocuments } from '../support/fixtures.js';
import { createTestPki, issueLeaf, type Issued, type TestPki } from '../support/pki.js';
import { defaultPcrs, makeDocument, PCR_ZERO } from '../support/document.js';

const AT = Date.UTC(2026, 0, 15, 12, 0, 0);
const HOUR = 3_600_000;

type Outcome = { readonly ok: VerifiedDocument } | { readonly code: string } | { readonly typeError: string };

function classify(err: unknown): Outcome {
  if (isAttestationError(err)) return { code: err.code };
  if (err instanceof TypeError) return { typeError: err.message };
  throw err;
}

function syncOutcome(verify: Verifier, bytes: Uint8Array, options: VerifyOptions): Outcome {
  try {
    return { ok: verify(bytes, options) };
  } catch (err) {
    return classify(err);
  }
}

async function poolOutcome(verify: AsyncVerifier, bytes: Uint8Array, options: VerifyOptions): Promise<Outcome> {
  try {
    return { ok: await verify(bytes, options) };
  } catch (err) {
    return classify(err);
  }
}

interface Sample {
  readonly bytes: Uint8Array;
  readonly at: number;
  readonly roots: readonly string[];
}

let pki: TestPki;
let otherLeaf: Issued;
const samples: Sample[] = [];

beforeAll(async () => {
  pki = await createTestPki(AT);
  otherLeaf = await issueLeaf(pki);
  for (const entry of [...realDocuments, ...negativeDocuments]) samples.push({ bytes: fixtureBytes(entry.file), at: entry.timestamp_ms, roots: [awsRootPem] });
  const roots = [pki.root.pem];
  const generated = [
    makeDocument(pki, { timestamp: AT - 1000 }),
    makeDocument(pki, { timestamp: AT - 1000, nonce: new Uint8Array(32).fill(9), publicKey: new Uint8Array(294).fill(4), userData: new Uint8Array(16).fill(5) }),
    makeDocument(pki, { timestamp: AT - 1000, pcrs: new Map([0, 1, 2].map((i) => [i, PCR_ZERO])) }), // debug mode
    makeDocument(pki, { timestamp: AT - 1000, pcrs: defaultPcrs(3) }),
    makeDocument(pki, { timestamp: AT - 10 * HOUR }), // old
    makeDocument(pki, { timestamp: AT + 5 * 60_000 }), // from the future
    makeDocument(pki, { timestamp: AT - 1000, tag18: true }),
    makeDocument(pki, { timestamp: AT - 1000 }, otherLeaf), // another leaf: a cache miss, checked under its issuer
  ];
  for (const bytes of generated) samples.push({ bytes, at: AT, roots });
  expect(samples.length).toBeGreaterThan(10);
});

/** Random options of every kind verification reads, some of them wrong for the document. */
const optionsArb = fc.record({
  atShift: fc.oneof(fc.constant(0), fc.integer({ min: -2 * HOUR, max: 2 * HOUR }), fc.constantFrom(-400 * 24 * HOUR, 400 * 24 * HOUR)),
  maxAgeMs: fc.option(fc.constantFrom(1, 60_000, 300_000, 24 * HOUR), { nil: undefined }),
  clockSkewMs: fc.option(fc.constantFrom(0, 60_000), { nil: undefined }),
  expectedNonce: fc.option(fc.oneof(fc.constant(new Uint8Array(32).fill(9)), fc.uint8Array({ maxLength: 8 })), { nil: undefined }),
  pcrs: fc.option(fc.dictionary(fc.constantFrom('0', '1', '2', '3', '8', '32'), fc.oneof(fc.constant('11'.repeat(48)), fc.constant('00'.repeat(48)), fc.uint8Array({ minLength: 48, maxLength: 48 }))), { nil: undefined }),
  allowDebug: fc.option(fc.boolean(), { nil: undefined }),
  wrongRoot: fc.boolean(),
});

type RandomOptions = typeof optionsArb extends fc.Arbitrary<infer T> ? T : never;

/** Options every unchanged sample verifies under (its own time and roots, nothing more asked). */
const NEUTRAL: RandomOptions = { atShift: 0, maxAgeMs: undefined, clockSkewMs: undefined, expectedNonce: undefined, pcrs: undefined, allowDebug: true, wrongRoot: false };

function optionsFor(sample: Sample, o: RandomOptions): VerifyOptions {
  return {
    at: sample.at + o.atShift,
    roots: o.wrongRoot ? [sample.roots[0] === awsRootPem ? pki.root.pem : awsRootPem] : sample.roots,
    ...(o.maxAgeMs === undefined ? {} : { maxAgeMs: o.maxAgeMs }),
    ...(o.clockSkewMs === undefined ? {} : { clockSkewMs: o.clockSkewMs }),
    ...(o.expectedNonce === undefined ? {} : { expectedNonce: o.expectedNonce }),
    ...(o.pcrs === undefined ? {} : { pcrs: o.pcrs }),
    ...(o.allowDebug === undefined ? {} : { allowDebug: o.allowDebug }),
  };
}

const mutationArb = fc.oneof(
  fc.record({ kind: fc.constant('none' as const) }),
  fc.record({ kind: fc.constant('xor' as const), pos: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
  // The signature's bytes (the last 96): the one check that runs on the pool.
  fc.record({ kind: fc.constant('signature' as const), pos: fc.integer({ min: 1, max: 96 }), xor: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('insert' as const), pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('delete' as const), pos: fc.nat(), len: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('truncate' as const), pos: fc.nat() }),
);

type Mutation = { kind: string; pos?: number; xor?: number; byte?: number; len?: number };

function mutate(bytes: Uint8Array, m: Mutation): Uint8Array {
  const p = (m.pos ?? 0) % bytes.length;
  switch (m.kind) {
    case 'xor': {
      const out = bytes.slice();
      out[p]! ^= m.xor!;
      return out;
    }
    case 'signature': {
      const out = bytes.slice();
      out[bytes.length - m.pos!]! ^= m.xor!;
      return out;
    }
    case 'insert':
      return Buffer.concat([bytes.subarray(0, p), Uint8Array.of(m.byte!), bytes.subarray(p)]);
    case 'delete':
      return Buffer.concat([bytes.subarray(0, p), bytes.subarray(p + m.len!)]);
    case 'truncate':
      return bytes.subarray(0, p);
    default:
      return bytes;
  }
}

describe('thread-pool verifier = calling-thread verifier', () => {
  it('gives the same verdict, error code and content for real, generated and mutated documents under random options', async () => {
    // Small caches too: certificate cache misses (each signature checked under its issuer, on the pool) as well as hits.
    const pairs = [
      { sync: createVerifier(), pool: createThreadPoolVerifier({ threads: 2 }) },
      { sync: createVerifier({ cacheSize: 1 }), pool: createThreadPoolVerifier({ threads: 1, cacheSize: 1 }) },
    ];
    const seen = new Set<string>();
    await fc.assert(
      fc.asyncProperty(fc.nat(), mutationArb, optionsArb, fc.nat({ max: 1 }), async (i, m, o, which) => {
        const sample = samples[i % samples.length]!;
        const bytes = mutate(sample.bytes, m);
        const options = optionsFor(sample, o);
        const { sync, pool } = pairs[which]!;
        const expected = syncOutcome(sync, bytes, options);
        const got = await poolOutcome(pool, bytes, options);
        expect(got).toEqual(expected);
        seen.add('ok' in expected ? 'ok' : 'code' in expected ? expected.code : 'TypeError');
      }),
      // Besides the random cases, every sample unchanged and with one signature bit flipped, under options that
      // accept it: acceptance and the signature failure are always compared, not left to chance.
      { numRuns: 1500, examples: samples.flatMap((_, i) => [0, 1].flatMap((which): Array<[number, Mutation & { kind: 'none' } | { kind: 'signature'; pos: number; xor: number }, RandomOptions, number]> => [[i, { kind: 'none' }, NEUTRAL, which], [i, { kind: 'signature', pos: 1, xor: 1 }, NEUTRAL, which]])) },
    );
    // The property reached acceptance and the signature failure, not only early parse errors.
    expect(seen).toContain('ok');
    expect(seen).toContain('BAD_SIGNATURE');
    expect(seen).toContain('MALFORMED_COSE');
  });

  it('refuses a document whose COSE signature fails with BAD_SIGNATURE, as the calling-thread verifier does', async () => {
    const pool = createThreadPoolVerifier({ threads: 2 });
    const bad = negativeDocuments.find((d) => d.file === 'bad-signature.cbor')!;
    const options = { at: bad.timestamp_ms, roots: [awsRootPem] };
    expect(syncOutcome(createVerifier(), fixtureBytes(bad.file), options)).toEqual({ code: 'BAD_SIGNATURE' });
    expect(await poolOutcome(pool, fixtureBytes(bad.file), options)).toEqual({ code: 'BAD_SIGNATURE' });
    const good = makeDocument(pki, { timestamp: AT });
    const flipped = good.slice();
    flipped[flipped.length - 1]! ^= 1;
    expect(await poolOutcome(pool, flipped, { at: AT, roots: [pki.root.pem] })).toEqual({ code: 'BAD_SIGNATURE' });
  });

  it('rejects (never throws synchronously) for invalid arguments, with the same TypeError', async () => {
    const sync = createVerifier();
    const pool = createThreadPoolVerifier({ threads: 1 });
    const cases: Array<[unknown, unknown]> = [
      ['not bytes', { at: AT }],
      [samples[0]!.bytes, { at: Number.NaN }],
      [samples[0]!.bytes, { at: AT, pcrs: { 40: 'aa' } }],
      [samples[0]!.bytes, { at: AT, roots: [] }],
    ];
    for (const [bytes, options] of cases) {
      const expected = syncOutcome(sync, bytes as Uint8Array, options as VerifyOptions);
      expect('typeError' in expected).toBe(true);
      let promise: Promise<Outcome> | undefined;
      expect(() => (promise = poolOutcome(pool, bytes as Uint8Array, options as VerifyOptions))).not.toThrow();
      expect(await promise).toEqual(expected);
    }
  });

  it('answers each of many verifications in flight at once for its own document', async () => {
    const sync = createVerifier();
    const pool = createThreadPoolVerifier({ threads: 2 });
    const inputs = Array.from({ length: 96 }, (_, k) => {
      const sample = samples[k % samples.length]!;
      return { bytes: k % 5 === 4 ? mutate(sample.bytes, { kind: 'signature', pos: 1 + (k % 96), xor: 1 }) : sample.bytes, options: { at: sample.at, roots: sample.roots, allowDebug: k % 2 === 0 } };
    });
    const got = await Promise.all(inputs.map(({ bytes, options }) => poolOutcome(pool, bytes, options)));
    expect(got).toEqual(inputs.map(({ bytes, options }) => syncOutcome(sync, bytes, options)));
    expect(got.filter((g) => 'ok' in g).length).toBeGreaterThan(10);
  });

  it('is not changed by the caller rewriting the document or the options while a check is on the pool', async () => {
    const pool = createThreadPoolVerifier({ threads: 1 });
    const bytes = makeDocument(pki, { timestamp: AT - 1000, nonce: new Uint8Array(32).fill(9), pcrs: new Map([0, 1, 2].map((i) => [i, PCR_ZERO])) });
    const original = bytes.slice();
    const options = { at: AT, roots: [pki.root.pem], maxAgeMs: 60_000, allowDebug: true, expectedNonce: new Uint8Array(32).fill(9) };
    const expected = syncOutcome(createVerifier(), original, { ...options });
    expect('ok' in expected).toBe(true);
    const pending = poolOutcome(pool, bytes, options);
    bytes.fill(0);
    options.allowDebug = false;
    options.maxAgeMs = 1;
    options.expectedNonce = new Uint8Array(32);
    expect(await pending).toEqual(expected);
  });
});

describe('PoolSlots', () => {
  it('hands out at most `size` slots; a released slot is handed out again', () => {
    const slots = new PoolSlots(2);
    expect([slots.take(), slots.take(), slots.take()]).toEqual([true, true, false]);
    slots.release();
    expect([slots.take(), slots.take()]).toEqual([true, false]);
  });

  it('refuses a size that is not a positive integer', () => {
    for (const size of [0, -1, 1.5, Number.NaN]) expect(() => new PoolSlots(size)).toThrow(RangeError);
  });
});
