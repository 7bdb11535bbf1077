/**
 * The floor of a release (issue 15, goal 1), for bench/floor.ts: a release server that does only the work a
 * release cannot avoid, on node:http and node:crypto (no hono, no metrics, no logging, no store, no rate limits):
 * read the POST body, JSON.parse, base64-decode the attestation, the REAL verifier (createVerifier), the nonce
 * (one HMAC-SHA-256 as the broker's stateless challenge, then single use in a Map), the PCRs against one policy
 * (bytes compared), the value from a cache of the local provider's AES-256-GCM decrypt (the broker caches decrypted
 * values too), the seal (JWS EdDSA of the same claims, then JWE RSA-OAEP-256 + A256GCM to the document's key,
 * KeyObject cached per SPKI), ONE audit record per release appended to an O_DSYNC file in batches (all records
 * that arrive while a write is in flight go in the next write; SHA-256 chain and an Ed25519-signed seal line per
 * batch, the broker's format: `keygate audit verify` reads it), answered only once its batch is durable.
 *
 * BENCH_FLOOR_MODE picks how much of it runs, so that bench/floor.ts can price each layer:
 * - `full`: all of the above;
 * - `noaudit`: no audit record (verify + nonce + PCRs + value + seal);
 * - `verify`: verify + nonce + PCRs, then a fixed answer of the full answer's size;
 * - `http`: read the body and JSON.parse it, then the fixed answer.
 * GET /v1/challenge issues nonces in every mode (the bench mints documents with them); GET /v1/broker-key is the
 * public signing JWK (to check answers); GET /floor/stats counts releases and names the audit file; POST /floor/time-verify
 * starts summing the CPU of the verifier calls (reported by /floor/stats; never on during the measured passes).
 * Driven over IPC like bench/broker-child.ts (bench/child.ts serveBenchRequests).
 */
import '../test/support/setup.js';
import { createCipheriv, createDecipheriv, createHash, createHmac, createPublicKey, constants as cryptoConstants, generateKeyPairSync, publicEncrypt, randomBytes, sign, timingSafeEqual, type KeyObject } from 'node:crypto';
import { closeSync, constants, mkdtempSync, openSync, rmSync, write } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createVerifier, type VerifiedDocument } from '../index.js';
import { serveBenchRequests, type Binding } from './child.js';

export type FloorMode = 'full' | 'noaudit' | 'verify' | 'http';
const MODE = (process.env.BENCH_FLOOR_MODE ?? 'full') as FloorMode;
if (!['full', 'noaudit', 'verify', 'http'].includes(MODE)) throw new Error(`BENCH_FLOOR_MODE must be full, noaudit, verify or http, not ${MODE}`);

const MAX_AGE_MS = 300_000; // the broker's default maxDocumentAgeSeconds
const NONCE_TTL_MS = 30_000; // the broker's challenge lifetime
const NONCE_SKEW_MS = 5_000;
const VALUE_CACHE_MS = 60_000; // the broker's default secretCacheTtlSeconds
const JWS_TYPE = 'keygate-release+jws';

const dir = mkdtempSync(join(tmpdir(), 'keygate-bench-floor-'));
const auditFile = join(dir, 'audit.jsonl');
const verifier = createVerifier();
const challengeKey = randomBytes(32);
const { privateKey: signingKey, publicKey: signingPublic } = generateKeyPairSync('ed25519');
const publicJwk = signingPublic.export({ format: 'jwk' });
const kid = createHash('sha256').update(JSON.stringify({ crv: publicJwk.crv, kty: publicJwk.kty, x: publicJwk.x })).digest('base64url');

let roots: string[] = [];
/** The one policy: the secret, its version and TTL, the PCR bytes it requires, and its value encrypted as the local provider stores it. */
let policy: { secret: string; version: number; ttlSeconds: number; pcrs: [number, Buffer][]; ciphertext: Buffer; iv: Buffer; tag: Buffer; aad: Buffer } | undefined;
const localKey = randomBytes(32);
let valueCache: { value: Buffer; until: number } | undefined;
/** Spent nonces (hex id -> until when to remember them), as the broker's in-process nonce registry. */
const spent = new Map<string, number>();
const recipients = new Map<string, KeyObject>();
let released = 0;
let fixedAnswer = '';
/** POST /floor/time-verify: from then on, the CPU of each verifier call is summed (process CPU around the call; off in the measured passes). */
let verifyTiming: { cpuUs: number; count: number } | undefined;

// ---- challenge: the broker's format (time || random || HMAC-SHA-256 truncated to 16 bytes) ----
function mac(prefix: Buffer): Buffer {
  return createHmac('sha256', challengeKey).update('keygate/challenge/v1').update(prefix).digest().subarray(0, 16);
}
function issue(now: number): Buffer {
  const prefix = Buffer.alloc(16);
  prefix.writeBigUInt64BE(BigInt(now), 0);
  randomBytes(8).copy(prefix, 8);
  return Buffer.concat([prefix, mac(prefix)]);
}
/** One HMAC, the lifetime, then single use. */
function spend(nonce: Uint8Array | null, now: number): boolean {
  if (!nonce || nonce.length !== 32) return false;
  const buf = Buffer.from(nonce.buffer, nonce.byteOffset, nonce.byteLength);
  if (!timingSafeEqual(mac(buf.subarray(0, 16)), buf.subarray(16))) return false;
  const issued = Number(buf.readBigUInt64BE(0));
  if (issued > now + NONCE_SKEW_MS || now > issued + NONCE_TTL_MS) return false;
  const id = buf.toString('hex');
  if (spent.has(id)) return false;
  spent.set(id, issued + NONCE_TTL_MS + NONCE_SKEW_MS);
  return true;
}
// Forget nonces that can no longer verify (the registry's expiry), off the request path.
setInterval(() => {
  const now = Date.now();
  for (const [id, until] of spent) if (until < now) spent.delete(id);
}, 5_000).unref();

// ---- the value: the local provider's AES-256-GCM, decrypted once per cache lifetime ----
function plaintext(now: number): Buffer {
  const p = policy!;
  if (!valueCache || valueCache.until < now) {
    const d = createDecipheriv('aes-256-gcm', localKey, p.iv);
    d.setAAD(p.aad);
    d.setAuthTag(p.tag);
    valueCache = { value: Buffer.concat([d.update(p.ciphertext), d.final()]), until: now + VALUE_CACHE_MS };
  }
  return Buffer.from(valueCache.value); // a copy the request owns and wipes
}

// ---- the seal: JWS (EdDSA) inside JWE (RSA-OAEP-256, A256GCM), as broker/seal/compact.ts makes them ----
const b64u = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url');
const jwsHeader = (): string => Buffer.from(JSON.stringify({ alg: 'EdDSA', kid, typ: JWS_TYPE })).toString('base64url');
function recipientOf(spki: Uint8Array): KeyObject {
  const id = Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength).toString('latin1');
  let key = recipients.get(id);
  if (!key) {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
    if (key.asymmetricKeyType !== 'rsa') throw new Error('not an RSA key');
    recipients.set(id, key);
  }
  return key;
}
function seal(doc: VerifiedDocument, value: Buffer, now: number): string {
  const p = policy!;
  const iat = Math.floor(now / 1000);
  const claims = { iss: 'keygate', sub: p.secret, ver: p.version, text: true, iat, exp: iat + p.ttlSeconds, ttl: p.ttlSeconds, nonce: Buffer.from(doc.nonce!).toString('hex'), doc: doc.documentSha256, aud: doc.moduleId, val: value.toString('base64url') };
  value.fill(0);
  const input = `${jwsHeader()}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const jws = `${input}.${b64u(sign(null, Buffer.from(input, 'latin1'), signingKey))}`;
  const header = Buffer.from(JSON.stringify({ alg: 'RSA-OAEP-256', enc: 'A256GCM', cty: JWS_TYPE, kid: p.secret })).toString('base64url');
  const random = randomBytes(44);
  const cek = random.subarray(0, 32);
  const iv = random.subarray(32);
  const wrapped = publicEncrypt({ key: recipientOf(doc.publicKey!), padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, cek);
  const cipher = createCipheriv('aes-256-gcm', cek, iv);
  cipher.setAAD(Buffer.from(header, 'latin1'));
  const ct = Buffer.concat([cipher.update(Buffer.from(jws, 'latin1')), cipher.final()]);
  const jwe = `${header}.${b64u(wrapped)}.${b64u(iv)}.${b64u(ct)}.${b64u(cipher.getAuthTag())}`;
  random.fill(0);
  return JSON.stringify({ secrets: [{ name: p.secret, version: p.version, ttlSeconds: p.ttlSeconds, jwe }] });
}

// ---- the audit: one O_DSYNC write per batch, hash chain + signed seal (broker/audit/chain.ts's format) ----
const fd = openSync(auditFile, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_DSYNC, 0o600);
let seq = 0;
let prevHash = '0'.repeat(64);
let queue: { body: Record<string, unknown>; done: (err: Error | null) => void }[] = [];
let writing = false;
function chainLine(body: Record<string, unknown>, lines: string[]): void {
  seq += 1;
  const line = JSON.stringify({ seq, prevHash, ...body });
  prevHash = createHash('sha256').update(line, 'utf8').digest('hex');
  lines.push(line);
}
function flush(): void {
  if (writing || !queue.length) return;
  writing = true;
  const batch = queue;
  queue = [];
  const lines: string[] = [];
  for (const q of batch) chainLine(q.body, lines);
  const sig = sign(null, Buffer.from(`keygate/audit/seal/v1\n${seq + 1}\n${prevHash}`, 'utf8'), signingKey).toString('base64url');
  chainLine({ type: 'seal', kid, sig }, lines);
  const bytes = Buffer.from(`${lines.join('\n')}\n`, 'utf8');
  write(fd, bytes, 0, bytes.length, null, (err, n) => {
    writing = false;
    // A short write or an error fails the whole batch (the bench then counts failures: it never happens on a healthy disk).
    const failure = err ?? (n !== bytes.length ? new Error('short audit write') : null);
    for (const q of batch) q.done(failure);
    flush();
  });
}
function audit(body: Record<string, unknown>, done: (err: Error | null) => void): void {
  queue.push({ body, done });
  if (!writing) setImmediate(flush); // same-tick records join the batch (as the broker's flush loop)
}

// ---- HTTP ----
const HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };
function reply(res: ServerResponse, status: number, json: string): void {
  res.writeHead(status, { ...HEADERS, 'content-length': Buffer.byteLength(json) });
  res.end(json);
}
const refuse = (res: ServerResponse, status: number, code: string): void => reply(res, status, JSON.stringify({ error: { code, message: code } }));

function release(req: IncomingMessage, res: ServerResponse, raw: Buffer, started: number): void {
  let body: { attestation?: unknown; names?: unknown };
  try {
    body = JSON.parse(raw.toString('utf8')) as typeof body;
  } catch {
    return refuse(res, 400, 'BAD_REQUEST');
  }
  const p = policy!;
  if (typeof body !== 'object' || body === null || typeof body.attestation !== 'string' || !Array.isArray(body.names) || body.names.length !== 1 || body.names[0] !== p.secret) return refuse(res, 400, 'BAD_REQUEST');
  if (MODE === 'http') return reply(res, 200, fixedAnswer);
  const now = Date.now();
  let doc: VerifiedDocument;
  try {
    const bytes = new Uint8Array(Buffer.from(body.attestation, 'base64'));
    if (verifyTiming) {
      const c0 = process.cpuUsage();
      doc = verifier(bytes, { at: now, roots, maxAgeMs: MAX_AGE_MS, allowDebug: false });
      const c = process.cpuUsage(c0);
      verifyTiming.cpuUs += c.user + c.system;
      verifyTiming.count += 1;
    } else {
      doc = verifier(bytes, { at: now, roots, maxAgeMs: MAX_AGE_MS, allowDebug: false });
    }
  } catch {
    return refuse(res, 403, 'ATTESTATION_INVALID');
  }
  if (!spend(doc.nonce, now)) return refuse(res, 403, 'NONCE_MISMATCH');
  for (const [index, bytes] of p.pcrs) {
    const actual = doc.pcrs.get(index);
    if (!actual || Buffer.compare(actual, bytes) !== 0) return refuse(res, 403, 'POLICY_DENIED');
  }
  if (!doc.publicKey) return refuse(res, 400, 'BAD_REQUEST');
  if (MODE === 'verify') return reply(res, 200, fixedAnswer);
  const answer = seal(doc, plaintext(now), now);
  released += 1;
  if (MODE === 'noaudit') return reply(res, 200, answer);
  const pcrs: Record<number, string> = {};
  for (const i of [0, 1, 2, 4]) {
    const b = doc.pcrs.get(i);
    if (b) pcrs[i] = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
  }
  const record = {
    type: 'decision',
    time: new Date(now).toISOString(),
    decision: 'release',
    code: 'RELEASED',
    secret: p.secret,
    version: p.version,
    moduleId: doc.moduleId,
    pcrs,
    docSha256: doc.documentSha256,
    nonce: Buffer.from(doc.nonce!).toString('hex'),
    client: req.socket.remoteAddress ?? 'unknown',
    latencyMs: Math.round((performance.now() - started) * 1000) / 1000,
  };
  audit(record, (err) => (err ? refuse(res, 500, 'INTERNAL_ERROR') : reply(res, 200, answer)));
}

const server = createServer({ keepAlive: true }, (req, res) => {
  const started = performance.now();
  if (req.method === 'POST' && req.url === '/v1/secrets') {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => release(req, res, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), started));
  } else if (req.method === 'GET' && req.url === '/v1/challenge') {
    const now = Date.now();
    reply(res, 200, JSON.stringify({ nonce: issue(now).toString('base64'), expiresAt: now + NONCE_TTL_MS }));
  } else if (req.method === 'GET' && req.url === '/v1/broker-key') {
    reply(res, 200, JSON.stringify({ ...publicJwk, kid, alg: 'EdDSA', use: 'sig' }));
  } else if (req.method === 'GET' && req.url === '/floor/stats') {
    reply(res, 200, JSON.stringify({ mode: MODE, released, auditFile, audited: seq, verifyCpuUs: verifyTiming?.cpuUs ?? null, verifyCount: verifyTiming?.count ?? null }));
  } else if (req.method === 'POST' && req.url === '/floor/time-verify') {
    verifyTiming = { cpuUs: 0, count: 0 };
    reply(res, 200, '{}');
  } else {
    refuse(res, 404, 'NOT_FOUND');
  }
});

/** The answer the `verify` and `http` modes give: a full answer's size and shape (a sealed dummy value to a throwaway key). */
function fixedSizeAnswer(): string {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'der', type: 'spki' });
  const fake = { nonce: new Uint8Array(32), documentSha256: '0'.repeat(64), moduleId: 'i-0123456789abcdef0-enc0123456789abcdef', publicKey: new Uint8Array(rsa) } as unknown as VerifiedDocument;
  return seal(fake, plaintext(Date.now()), Date.now());
}

serveBenchRequests(
  async (start: { roots: string[]; bind?: Binding[] }) => {
    roots = start.roots;
    const b = start.bind?.[0];
    if (!b) throw new Error('the floor server needs one binding');
    const iv = randomBytes(12);
    const aad = Buffer.from(`keygate/local/v1\0${b.secret}`, 'utf8');
    const cipher = createCipheriv('aes-256-gcm', localKey, iv);
    cipher.setAAD(aad);
    const ciphertext = Buffer.concat([cipher.update(b.value, 'utf8'), cipher.final()]);
    policy = { secret: b.secret, version: 1, ttlSeconds: b.ttlSeconds ?? 60, pcrs: Object.entries(b.pcrs).map(([i, hex]) => [Number(i), Buffer.from(hex, 'hex')]), ciphertext, iv, tag: cipher.getAuthTag(), aad };
    fixedAnswer = fixedSizeAnswer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  },
  async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  },
);
