/**
 * bench/floor (`npm run bench -- floor`): how far the broker's CPU per release is from the floor of a release, and
 * whether goal 1 of issue 15 (cpuRatio = CPU of one verify ÷ CPU per release ≥ 0.7) is reachable on this machine.
 *
 * The floor is bench/floor-server.ts: node:http + node:crypto doing only what a release cannot avoid (body, JSON,
 * base64, the real verifier, one nonce HMAC and single use, PCR bytes, the cached value, the seal, one audit record
 * per release in an O_DSYNC hash-chained signed batch, the answer). Each variant runs in its own process and is
 * measured by that process's CPU (bench/child.ts), at the same concurrency and with the same load worker and kind of
 * documents as bench/broker, after the same steady-state warm-up (bench/steady.ts):
 *   floorHttp     read the body, JSON.parse, a fixed answer of the real answer's size
 *   floorVerify   + base64, verify, nonce, PCRs (fixed answer)
 *   floorNoAudit  + the value and the seal (the real answer), no audit record
 *   floor         + the audit record (the full floor)
 *   brokerThreads0  the real broker (bench/broker-child.ts), verifyThreads 0
 *   brokerDefault   the real broker, its default verifyThreads
 * in BENCH_FLOOR_ROUNDS rounds (default 3), the variants interleaved (order rotated each round), each round with a
 * verify-only figure measured as bench/broker measures it (createVerifier in this process, same kind of documents).
 * Medians over the rounds go to bench/results/floor.json.
 *
 * Fails loudly when the floor skips work: after each measured pass, fresh requests to every variant that seals must
 * come back 200 with a JWE that the test enclave's key decrypts and an Ed25519 JWS that verifies under the server's
 * key, bound to the request's nonce and carrying the value; a replayed document must be refused; and at the end the
 * full floor's audit file must verify (`keygate audit verify`'s checker) with one record per release it answered.
 *
 * BENCH_FLOOR_CPU_PROFILE=DIR also writes V8 CPU profiles of the full floor and of the broker (verifyThreads 0) over
 * one more pass each (DIR/floor.cpuprofile, DIR/broker.cpuprofile).
 */
import '../test/support/setup.js';
import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { createVerifier } from '../index.js';
import { verifyAuditLog } from '../broker/audit/verify-log.js';
import { createTestPki } from '../test/support/pki.js';
import { APPROVED, TestEnclave, valueOf } from '../test/support/enclave.js';
import { measure, quantile, runLoadWorker, writeResults } from './harness.js';
import { startBrokerChild, type BrokerChild, type BrokerChildOptions } from './child.js';
import { threadCpuNs, threadSplit, warmUntilSteady, type WarmUpResult } from './steady.js';

const REQUESTS = Number(process.env.BENCH_FLOOR_REQUESTS ?? 2000);
const CONCURRENCY = Number(process.env.BENCH_FLOOR_CONCURRENCY ?? 16);
const ROUNDS = Number(process.env.BENCH_FLOOR_ROUNDS ?? 3);
const PROFILE_DIR = process.env.BENCH_FLOOR_CPU_PROFILE;
const SECRET = 'db-password';
const VALUE = 'bench-value';

type VariantKey = 'floorHttp' | 'floorVerify' | 'floorNoAudit' | 'floor' | 'brokerThreads0' | 'brokerDefault';
interface Spec {
  readonly key: VariantKey;
  readonly label: string;
  /** Answers carry a real sealed value (checked after each pass). */
  readonly seals: boolean;
  /** Spends nonces (a replay is refused). */
  readonly spends: boolean;
  readonly options: BrokerChildOptions;
}
const floorMode = (mode: string): BrokerChildOptions => ({ script: './floor-server.ts', env: { BENCH_FLOOR_MODE: mode } });
const SPECS: readonly Spec[] = [
  { key: 'floorHttp', label: 'floor: HTTP only (body, JSON.parse, fixed answer)', seals: false, spends: false, options: floorMode('http') },
  { key: 'floorVerify', label: 'floor: + base64, verify, nonce, PCRs', seals: false, spends: true, options: floorMode('verify') },
  { key: 'floorNoAudit', label: 'floor: + value, seal (no audit)', seals: true, spends: true, options: floorMode('noaudit') },
  { key: 'floor', label: 'floor: full release (+ audit, O_DSYNC)', seals: true, spends: true, options: floorMode('full') },
  { key: 'brokerThreads0', label: 'broker, verifyThreads 0', seals: true, spends: true, options: { env: { BENCH_BROKER_VERIFY_THREADS: '0' } } },
  { key: 'brokerDefault', label: 'broker, default verifyThreads', seals: true, spends: true, options: { env: { BENCH_BROKER_VERIFY_THREADS: undefined } } },
];

/** What the floor leaves out that the broker does, and why it is not unavoidable work of a release. */
const EXCLUDED = [
  'rate limits and quarantine (per client, identity, secret): abuse controls, not release work; off in the bench broker too (NO_RATE_LIMITS), so both skip the buckets',
  'store refresh before each decision (the file store stats 2 directories and 2 files, ~7 µs, shared by the requests arriving meanwhile) so that a revocation is seen by the next release: a guarantee, but its per-release cost is not unavoidable (a change notification or a generation counter written by `keygate revoke` gives the same promise without a stat per check)',
  'revocation, approved-baseline, delegation and human-approval gates: one binding, no revocations in the bench; in memory per store generation in the broker',
  'canonical-base64 check of the attestation: the signature covers the decoded bytes, a non-canonical encoding cannot widen anything',
  'metrics, request log, hono routing: observability and framework, not release work',
  'audit refusal sampling, rotation, recovery: paths of refusals and failures, not of a release',
];

interface Pass {
  cpuUs: number;
  userUs: number;
  systemUs: number;
  mainUs: number | null;
  otherUs: number | null;
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  load1: number;
}

/** One variant's figures in the results: medians over the rounds (µs of the server process's CPU per request). */
interface Row {
  cpuUsPerRequest: number;
  userUsPerRequest: number;
  systemUsPerRequest: number;
  mainThreadUsPerRequest: number | null;
  otherThreadsUsPerRequest: number | null;
  /** CPU per verify ÷ CPU per request. */
  cpuRatio: number;
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  warmUpRequests: number;
  coldCpuUsPerRequest: number;
  cpuUsPerRequestByRound: number[];
}

interface Variant extends Spec {
  readonly child: BrokerChild;
  readonly enclave: TestEnclave;
  warmUp?: WarmUpResult;
  readonly passes: Pass[];
  /** POST /v1/secrets sent to it (load passes and checks). */
  sent: number;
}

const body = (d: Uint8Array): string => JSON.stringify({ attestation: Buffer.from(d).toString('base64'), names: [SECRET] });
const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const uptime = (): string => `load average: ${loadavg().map((l) => l.toFixed(2)).join(', ')}`;

async function mint(enclave: TestEnclave, n: number): Promise<Uint8Array[]> {
  const docs: Uint8Array[] = [];
  // Nonces live 30 s: fetch and mint right before the run that uses them.
  for (let i = 0; i < n; i++) docs.push(enclave.document(await challenge(enclave)));
  return docs;
}

/** A challenge, asked once more if a kept-alive connection closed by the server (idle timeout) under the request (undici does not retry). */
async function challenge(enclave: TestEnclave): Promise<Uint8Array> {
  try {
    return await enclave.challenge();
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    return enclave.challenge();
  }
}

/** One load pass of `n` fresh documents: the server process's CPU (total, user/system, main thread/others) per request. */
async function pass(v: Variant, n: number): Promise<Pass> {
  const bodies = (await mint(v.enclave, n)).map(body);
  const load1 = loadavg()[0]!;
  const c0 = await v.child.cpu();
  const t0 = threadCpuNs(v.child.pid);
  const load = await runLoadWorker(v.child.url, bodies, CONCURRENCY);
  const threads = threadSplit(v.child.pid, t0, threadCpuNs(v.child.pid), n);
  const c1 = await v.child.cpu();
  v.sent += n;
  if (load.failures) throw new Error(`${v.key}: ${load.failures} of ${n} requests failed: ${JSON.stringify(load.failureCodes)}`);
  const sorted = Float64Array.from(load.latencies).sort();
  const userUs = (c1.user - c0.user) / n;
  const systemUs = (c1.system - c0.system) / n;
  return { cpuUs: userUs + systemUs, userUs, systemUs, mainUs: threads?.mainUs ?? null, otherUs: threads?.otherUs ?? null, perSec: n / load.seconds, p50Ms: quantile(sorted, 0.5), p99Ms: quantile(sorted, 0.99), load1 };
}

/** The answers are real: fresh requests decrypt with the enclave's key, verify under the server's key, carry the value and this request's nonce; a replay is refused. */
async function checkAnswers(v: Variant, jwk: JWK): Promise<void> {
  for (let i = 0; i < 2; i++) {
    const nonce = await challenge(v.enclave);
    const doc = v.enclave.document(nonce);
    const res = await v.enclave.post(doc, [SECRET]);
    v.sent += 1;
    if (res.status !== 200 || res.body.secrets?.length !== 1) throw new Error(`${v.key}: a check request was answered ${res.status} ${JSON.stringify(res.body.error ?? res.body)}`);
    if (v.seals) {
      const claims = await v.enclave.open(res.body.secrets[0]!, jwk);
      if (valueOf(claims) !== VALUE || claims.nonce !== Buffer.from(nonce).toString('hex') || claims.sub !== SECRET) throw new Error(`${v.key}: an answer does not carry the value bound to its request`);
    }
    if (v.spends) {
      const replay = await v.enclave.post(doc, [SECRET]);
      v.sent += 1;
      if (replay.status === 200) throw new Error(`${v.key}: a replayed document was answered 200 (nonce not spent)`);
    }
  }
}

async function brokerKey(v: Variant): Promise<JWK> {
  return (await (await fetch(`${v.child.url}/v1/broker-key`)).json()) as JWK;
}

/** The full floor's audit file verifies (chain and seal signatures) and holds one record per release it answered. */
async function checkFloorAudit(v: Variant, jwk: JWK): Promise<{ released: number; records: number; seals: number }> {
  const stats = (await (await fetch(`${v.child.url}/floor/stats`)).json()) as { released: number; auditFile: string };
  const result = verifyAuditLog(readFileSync(stats.auditFile, 'utf8'), createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' }));
  if (!result.ok) throw new Error(`floor audit file does not verify: ${JSON.stringify(result.problem)}`);
  // Every request sent was a release (the replays were refused before anything was sealed or audited).
  const expected = v.sent - 2 * ROUNDS;
  if (result.decisions !== stats.released || stats.released !== expected) throw new Error(`floor audit: ${result.decisions} records, ${stats.released} releases, ${expected} expected`);
  return { released: stats.released, records: result.decisions, seals: result.seals };
}

export async function benchFloor(): Promise<Record<string, unknown>> {
  const pki = await createTestPki(Date.now());
  const bind = [{ secret: SECRET, value: VALUE, pcrs: APPROVED }];
  const variants: Variant[] = [];
  try {
    for (const spec of SPECS) {
      const child = await startBrokerChild([pki.root.pem], bind, spec.options);
      variants.push({ ...spec, child, enclave: new TestEnclave(pki, child.url), passes: [], sent: 0 });
    }
    const keys = new Map<VariantKey, JWK>();
    for (const v of variants) keys.set(v.key, await brokerKey(v));

    // Each process to its steady state (its own JIT: the order does not matter).
    for (const v of variants) {
      v.warmUp = await warmUntilSteady(async (n) => (await pass(v, n)).cpuUs);
      console.log(`${v.key}: warm after ${v.warmUp.requests} requests (${v.warmUp.cpuUsPerRequestByPass.map((c) => c.toFixed(0)).join(' → ')} µs); ${uptime()}`);
    }

    const verifier = createVerifier();
    const roots = [pki.root.pem];
    const verifyDocs = await mint(variants[0]!.enclave, 400);
    const verifyOne = (i: number): void => void verifier(verifyDocs[i % verifyDocs.length]!, { at: Date.now(), roots });
    // Warmed as long as the longest-warmed server (as bench/broker does), then timed alone after each round's loads.
    for (let i = 0, n = Math.max(2000, ...variants.map((v) => v.warmUp!.requests)); i < n; i++) verifyOne(i);
    const verifyUs: number[] = [];
    const loads: string[] = [];

    for (let round = 0; round < ROUNDS; round++) {
      loads.push(uptime());
      console.log(`round ${round + 1}/${ROUNDS}: ${uptime()}`);
      const order = variants.map((_, i) => variants[(i + round) % variants.length]!);
      for (const v of order) {
        const p = await pass(v, REQUESTS);
        v.passes.push(p);
        await checkAnswers(v, keys.get(v.key)!);
        console.log(`  ${v.key.padEnd(15)} ${p.cpuUs.toFixed(0).padStart(5)} µs CPU/request (user ${p.userUs.toFixed(0)}, system ${p.systemUs.toFixed(0)}; main ${p.mainUs?.toFixed(0)}, others ${p.otherUs?.toFixed(0)}), ${p.perSec.toFixed(0)}/s, load1 ${p.load1.toFixed(2)}`);
      }
      const vcpu0 = process.cpuUsage();
      measure('verify only (same documents)', REQUESTS, verifyOne, 0);
      const vcpu = process.cpuUsage(vcpu0);
      verifyUs.push((vcpu.user + vcpu.system) / REQUESTS);
      console.log(`  verify only     ${verifyUs[round]!.toFixed(0).padStart(5)} µs CPU`);
    }
    // Where the verify layer's cost beyond the verify loop goes: the verifier's own CPU inside the server (one more
    // pass of floorVerify with the server summing process CPU around each verifier call) against the loop's.
    const timed = variants.find((v) => v.key === 'floorVerify')!;
    await fetch(`${timed.child.url}/floor/time-verify`, { method: 'POST' });
    const timedPass = await pass(timed, REQUESTS);
    const timedStats = (await (await fetch(`${timed.child.url}/floor/stats`)).json()) as { verifyCpuUs: number; verifyCount: number };
    const verifyCpuUsInServer = timedStats.verifyCpuUs / timedStats.verifyCount;
    console.log(`  verifier calls inside floorVerify: ${verifyCpuUsInServer.toFixed(0)} µs CPU each (pass: ${timedPass.cpuUs.toFixed(0)} µs per request, timing included)`);
    const floorVariant = variants.find((v) => v.key === 'floor')!;
    const audit = await checkFloorAudit(floorVariant, keys.get('floor')!);

    const cpuUsPerVerify = median(verifyUs);
    const rows = {} as Record<VariantKey, Row>;
    for (const v of variants) {
      const m = (f: (p: Pass) => number | null): number | null => (v.passes.every((p) => f(p) !== null) ? median(v.passes.map((p) => f(p)!)) : null);
      rows[v.key] = {
        cpuUsPerRequest: m((p) => p.cpuUs)!,
        userUsPerRequest: m((p) => p.userUs)!,
        systemUsPerRequest: m((p) => p.systemUs)!,
        mainThreadUsPerRequest: m((p) => p.mainUs),
        otherThreadsUsPerRequest: m((p) => p.otherUs),
        // Per round: that round's verify ÷ that round's pass, then the median.
        cpuRatio: median(v.passes.map((p, i) => verifyUs[i]! / p.cpuUs)),
        requestsPerSec: m((p) => p.perSec)!,
        p50Ms: m((p) => p.p50Ms)!,
        p99Ms: m((p) => p.p99Ms)!,
        warmUpRequests: v.warmUp!.requests,
        coldCpuUsPerRequest: v.warmUp!.cpuUsPerRequestByPass[0]!,
        cpuUsPerRequestByRound: v.passes.map((p) => p.cpuUs),
      };
    }
    const cpu = (k: VariantKey): number => rows[k].cpuUsPerRequest;
    const layers = {
      httpUs: cpu('floorHttp'),
      verifyUs: cpu('floorVerify') - cpu('floorHttp'),
      sealUs: cpu('floorNoAudit') - cpu('floorVerify'),
      auditUs: cpu('floor') - cpu('floorNoAudit'),
    };
    const summary = {
      requests: REQUESTS,
      concurrency: CONCURRENCY,
      rounds: ROUNDS,
      cpuUsPerVerify,
      cpuUsPerVerifyByRound: verifyUs,
      floorCpuRatio: rows.floor.cpuRatio,
      brokerCpuRatio: rows.brokerThreads0.cpuRatio,
      brokerDefaultCpuRatio: rows.brokerDefault.cpuRatio,
      /** CPU per release the goal allows with this run's verify (verify ÷ 0.7). */
      goalCpuUsPerRelease: cpuUsPerVerify / 0.7,
      floorNonVerifyUs: cpu('floor') - cpuUsPerVerify,
      gapUs: cpu('brokerThreads0') - cpu('floor'),
      gapDefaultUs: cpu('brokerDefault') - cpu('floor'),
      layers,
      /** The verify layer beyond the in-process verify loop: base64, nonce HMAC and Map, PCR compare, and a verify on a server's event loop rather than in a tight loop. */
      verifyLayerBeyondVerifyUs: layers.verifyUs - cpuUsPerVerify,
      /** CPU of one verifier call inside the floorVerify server (process CPU around the call, summed by the server, one extra pass). */
      verifyCpuUsInServer,
      floorAuditRecords: audit.records,
      floorAuditSeals: audit.seals,
      loadAverages: loads,
      excluded: EXCLUDED,
      variants: rows,
    };
    console.log(`\nbench/floor (${REQUESTS} requests × ${ROUNDS} rounds, ${CONCURRENCY} concurrent; medians; CPU of the server process)`);
    for (const v of variants) {
      const r = rows[v.key];
      console.log(`${v.label.padEnd(52)} ${r.cpuUsPerRequest.toFixed(0).padStart(5)} µs (main ${r.mainThreadUsPerRequest?.toFixed(0)}, others ${r.otherThreadsUsPerRequest?.toFixed(0)})  verify ÷ it ${r.cpuRatio.toFixed(3)}`);
    }
    console.log(`verify only: ${cpuUsPerVerify.toFixed(0)} µs; goal (ratio 0.7) = ${summary.goalCpuUsPerRelease.toFixed(0)} µs per release`);
    console.log(`layers of the floor (µs): HTTP ${layers.httpUs.toFixed(0)}, verify+nonce+PCRs ${layers.verifyUs.toFixed(0)} (beyond the verify loop ${summary.verifyLayerBeyondVerifyUs.toFixed(0)}), value+seal ${layers.sealUs.toFixed(0)}, audit ${layers.auditUs.toFixed(0)}`);
    console.log(`gap broker − floor: ${summary.gapUs.toFixed(0)} µs (verifyThreads 0), ${summary.gapDefaultUs.toFixed(0)} µs (default); floor audit: ${audit.records} records in ${audit.seals} seals, verified`);
    console.log(`file: ${writeResults('floor', summary)}`);

    if (PROFILE_DIR) {
      for (const [key, name] of [['floor', 'floor'], ['brokerThreads0', 'broker']] as const) {
        const v = variants.find((x) => x.key === key)!;
        const bodies = (await mint(v.enclave, REQUESTS)).map(body);
        await v.child.profileStart();
        const load = await runLoadWorker(v.child.url, bodies, CONCURRENCY);
        v.sent += REQUESTS;
        if (load.failures) throw new Error(`${key}: profiled requests failed`);
        console.log(`wrote ${await v.child.profileStop(join(PROFILE_DIR, `${name}.cpuprofile`))}`);
      }
    }
    return summary;
  } finally {
    for (const v of variants) await v.child.stop();
  }
}
