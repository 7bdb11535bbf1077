/**
 * a broker verifying on the thread pool (verifyThreads 1, the default on 2 cores) under a storm of
 * malformed, forged, wrong-chain and valid documents at once: every answer has a stable code, every valid one is
 * released exactly once and bound to its own nonce/document, one RELEASED record per 200, no unhandled rejection,
 * and the broker stays ready (the pool slot is never leaked: valid documents keep being released afterwards).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import type { RunningBroker } from '../../broker/broker.js';
import { auditCodesIn, startTestBrokerWithDb } from '../support/broker.js';
import { createTestPki, issueLeaf, type TestPki } from '../support/pki.js';
import { TestEnclave, valueOf } from '../support/enclave.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

let pki: TestPki;
let other: TestPki;
let dir: string;
let broker: RunningBroker;
let jwk: JWK;
const unhandled: unknown[] = [];
const onUnhandled = (e: unknown): void => void unhandled.push(e);

beforeAll(async () => {
  process.on('unhandledRejection', onUnhandled);
  pki = await createTestPki(Date.now());
  other = await createTestPki(Date.now()); // an untrusted chain
  dir = mkdtempSync(join(tmpdir(), 'keygate-vt-storm-'));
  broker = await startTestBrokerWithDb(dir, [pki.root.pem], { verifyThreads: 1 });
  jwk = (await (await fetch(`${broker.url}/v1/broker-key`)).json()) as JWK;
}, 60_000);
afterAll(async () => {
  process.off('unhandledRejection', onUnhandled);
  await broker?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('thread-pool broker under a storm of bad documents', () => {
  it('answers each with a stable code, releases each valid one once, audits each release', async () => {
    const freshLeaf = await issueLeaf(pki); // a cache miss in flight with the rest
    const before = auditCodesIn(dir).filter((c) => c === 'RELEASED').length;
    const enclaves = Array.from({ length: 4 }, () => new TestEnclave(pki, broker.url));
    type Job = { kind: string; e: TestEnclave; nonce: Uint8Array; doc: Uint8Array; expect: string[] };
    const jobs: Job[] = await Promise.all(
      Array.from({ length: 72 }, async (_, k): Promise<Job> => {
        const e = enclaves[k % 4]!;
        const nonce = await e.challenge();
        const good = e.document(nonce);
        switch (k % 9) {
          case 0: return { kind: 'valid', e, nonce, doc: good, expect: ['OK'] };
          case 1: return { kind: 'fresh-leaf', e, nonce, doc: e.document(nonce, { certificate: freshLeaf.der, signer: freshLeaf.privateKey }), expect: ['OK'] };
          case 2: { const d = good.slice(); d[d.length - 1 - (k % 96)]! ^= 0x80; return { kind: 'bad-sig', e, nonce, doc: d, expect: ['BAD_SIGNATURE'] }; }
          case 3: return { kind: 'truncated', e, nonce, doc: good.subarray(0, k * 37 % good.length), expect: ['MALFORMED_COSE', 'MALFORMED_PAYLOAD', 'BAD_REQUEST'] };
          case 4: return { kind: 'untrusted', e, nonce, doc: e.document(nonce, { certificate: other.leaf.der, cabundle: other.cabundle, signer: other.leaf.privateKey }), expect: ['UNTRUSTED_ROOT'] };
          case 5: return { kind: 'wrong-issuer', e, nonce, doc: e.document(nonce, { certificate: other.leaf.der, signer: other.leaf.privateKey }), expect: ['CERT_CHAIN_INVALID'] };
          case 6: return { kind: 'leaf-signed-by-other', e, nonce, doc: e.document(nonce, { signer: other.leaf.privateKey }), expect: ['BAD_SIGNATURE'] };
          case 7: { const d = good.slice(); d[(k * 131) % d.length]! ^= 0x01; return { kind: 'bitflip', e, nonce, doc: d, expect: ['*'] }; }
          default: return { kind: 'replayed', e, nonce, doc: good, expect: ['OK'] };
        }
      }),
    );
    const sends = jobs.flatMap((j) => (j.kind === 'replayed' ? [j, j] : [j]));
    const answers = await Promise.all(sends.map(async (j) => ({ j, res: await j.e.post(j.doc, ['db']) })));
    let released = 0;
    for (const j of jobs) {
      const mine = answers.filter((a) => a.j === j).map((a) => a.res);
      const codes = mine.map((r) => (r.status === 200 ? 'OK' : r.body.error?.code ?? `HTTP ${r.status}`));
      for (const r of mine) expect(r.status, JSON.stringify(r.body)).not.toBe(500);
      if (j.kind === 'replayed') expect(codes.sort(), j.kind).toEqual(['NONCE_MISMATCH', 'OK']);
      else if (j.expect[0] !== '*') expect(j.expect, `${j.kind}: ${codes[0]}`).toContain(codes[0]);
      for (const r of mine.filter((x) => x.status === 200)) {
        released++;
        const claims = await j.e.open(r.body.secrets![0]!, jwk);
        expect([valueOf(claims), claims.nonce, claims.doc]).toEqual(['db-value', hex(j.nonce), sha256(j.doc)]);
      }
    }
    expect(auditCodesIn(dir).filter((c) => c === 'RELEASED').length - before).toBe(released);
    // Still serving: slots not leaked, nothing crashed.
    const after = await Promise.all(enclaves.map((e) => e.request(['db'])));
    expect(after.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect((await fetch(`${broker.url}/readyz`)).status).toBe(200);
    expect(unhandled).toEqual([]);
  }, 120_000);
});
