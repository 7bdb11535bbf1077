/**
 * kms-recipient end to end: `keygate bind --recipient` (a real CLI process),
 * a real `keygate broker` process over HTTP, the KMS-protocol test server
 * (which verifies the enclave's document and encrypts to its key, as KMS
 * does), and the enclave agent with the NSM simulator. The value reaches the
 * agent; the broker process never holds it: not in its memory (read through
 * /proc/PID/mem, with a control string that must be found), not in its log
 * lines, not in its audit, not in its value cache.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { JWK } from 'jose';
import { BIN } from '../support/cli.js';
import { errorOf } from '../support/agent.js';
import { TEST_CREDENTIALS, startKmsServer, type KmsTestServer } from '../support/kms-server.js';
import { NsmSimulator } from '../../vsock-shim/simulator/nsm-simulator.js';
import { createAgent, type SecretAgent } from '../../enclave-agent/index.js';

/** Distinctive enough that finding it anywhere means it leaked. */
const VALUE = 'rcpt-e2e-9b7c1f4e2d-the-broker-never-sees-this';
/** The jwe control: a value the broker does decrypt and cache, so the memory scan must find it. */
const JWE_VALUE = 'jwe-e2e-5a0d3c8e71-the-broker-caches-this';

let dir: string;
let simulator: NsmSimulator;
let kms: KmsTestServer;
let broker: ChildProcessByStdio<null, Readable, Readable>;
let url: string;
let logs = '';
const agents: SecretAgent[] = [];
const env = { ...process.env, AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId, AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey };

/** `keygate ...` as a subprocess; asynchronous, since the KMS test server it talks to runs in this process. */
function keygate(args: string[], input: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env, cwd: dir });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdin.end(input);
  return new Promise((resolve) => child.once('close', (status) => resolve({ status, stdout, stderr })));
}

/** Every readable private mapping of a process, scanned for each needle; returns the needles found. */
function findInMemory(pid: number, needles: readonly string[]): Set<string> {
  const found = new Set<string>();
  const wanted = needles.map((n) => Buffer.from(n));
  const maps = readFileSync(`/proc/${pid}/maps`, 'utf8').trim().split('\n');
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    for (const line of maps) {
      const [range, perms, , , , path] = line.split(/\s+/);
      // Heap, anonymous and stack mappings: where a process's data lives (not its code or mapped files).
      if (!perms!.startsWith('r') || (path && !path.startsWith('['))) continue;
      const [start, end] = range!.split('-').map((h) => BigInt(`0x${h}`));
      const size = Number(end! - start!);
      if (size > 512 * 1024 * 1024) continue;
      const chunk = Buffer.alloc(Math.min(size, 16 * 1024 * 1024));
      for (let off = 0; off < size; off += chunk.length - 256) {
        let n: number;
        try {
          n = readSync(fd, chunk, 0, Math.min(chunk.length, size - off), start! + BigInt(off));
        } catch {
          break; // a guard page or a mapping that went away
        }
        const view = chunk.subarray(0, n);
        wanted.forEach((w, i) => view.includes(w) && found.add(needles[i]!));
        if (off + n >= size) break;
      }
    }
  } finally {
    closeSync(fd);
  }
  return found;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-recipient-e2e-'));
  simulator = await NsmSimulator.create({ warn: () => {} });
  kms = await startKmsServer({ attestationRoots: [simulator.rootPem] });
  const config = join(dir, 'keygate.json');
  const rateLimits = { perClientPerSecond: 0, perIdentityPerSecond: 0, perSecretPerSecond: 0, quarantineAfterDenials: 0 };
  writeFileSync(config, JSON.stringify({ store: 'store', stateDir: 'state', extraRootPems: [simulator.rootPem], listen: '127.0.0.1:0', rateLimits, kms: { region: 'us-east-1', endpoint: kms.endpoint } }));
  const p = simulator.pcrs;
  const pcrs = ['--pcr0', p[0]!, '--pcr1', p[1]!, '--pcr2', p[2]!];
  const bound = await keygate(['bind', 'r-e2e', '--provider', 'aws-kms', '--kms-key-id', kms.keyId, '--recipient', ...pcrs, '--value-stdin', '--config', config], VALUE);
  expect(bound.status, bound.stderr).toBe(0);
  expect(bound.stdout).toMatch(/^bound r-e2e version 1 .*aws-kms, kms-recipient\)/);
  expect((await keygate(['bind', 'j-e2e', ...pcrs, '--value-stdin', '--config', config], JWE_VALUE)).status).toBe(0);
  // The binding on disk says the mode and holds only KMS ciphertext.
  const stored = readFileSync(join(dir, 'store', 'bindings', 'r-e2e.json'), 'utf8');
  expect(JSON.parse(stored)).toMatchObject({ mode: 'kms-recipient', provider: 'aws-kms' });

  broker = spawn(process.execPath, [BIN, 'broker', '--config', config, '--workers', '1'], { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: dir });
  broker.stderr.on('data', (d: Buffer) => (logs += d.toString()));
  url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start: ${logs}`)), 45_000);
    broker.stdout.on('data', (d: Buffer) => {
      logs += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(logs);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    broker.once('exit', (code) => reject(new Error(`broker exited ${code}: ${logs}`)));
  });
}, 120_000);

afterAll(async () => {
  for (const a of agents) await a.close();
  if (broker && broker.exitCode === null) {
    const exited = new Promise((r) => broker.once('exit', r));
    broker.kill('SIGTERM');
    await exited;
  }
  await kms?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function agent(brokerUrl = url): Promise<SecretAgent> {
  const brokerKey = (await (await fetch(`${url}/v1/broker-key`)).json()) as JWK;
  const a = await createAgent({ brokerUrl, brokerKey, nsm: simulator.client() });
  agents.push(a);
  return a;
}

describe('kms-recipient, end to end', () => {
  it('the enclave gets the value; the broker process never holds it (memory, log lines, audit, value cache)', async () => {
    const a = await agent();
    expect(await a.getSecret('r-e2e')).toBe(VALUE);
    expect(await a.getSecret('j-e2e')).toBe(JWE_VALUE);
    expect(kms.recipient.envelopes).toBe(1);

    const metrics = await (await fetch(`${url}/metrics`)).text();
    const lookups = metrics.split('\n').filter((l) => /^keygate_secret_cache_total\{/.test(l)).map((l) => Number(l.split(' ').at(-1)));
    expect(lookups.reduce((x, y) => x + y, 0)).toBe(1); // the jwe secret's one miss; the recipient secret never looked up

    const audit = readFileSync(join(dir, 'state', 'audit.jsonl'), 'utf8');
    expect(audit).toContain('"secret":"r-e2e"');
    const b64 = (s: string): string[] => [s, Buffer.from(s).toString('base64').slice(0, 40), Buffer.from(s).toString('base64url').slice(0, 40), Buffer.from(s).toString('hex')];
    for (const form of b64(VALUE)) {
      expect(audit).not.toContain(form);
      expect(logs).not.toContain(form);
    }
    // The scan works (it finds the secret name and the value the broker does decrypt and cache) and finds no trace of the recipient value.
    const found = findInMemory(broker.pid!, ['r-e2e', JWE_VALUE, VALUE]);
    expect(found.has('r-e2e')).toBe(true);
    expect(found.has(JWE_VALUE)).toBe(true);
    expect(found.has(VALUE)).toBe(false);
  });

  it('a parent relaying one enclave\'s answer to another enclave gets nothing released: UNTRUSTED_RESPONSE', async () => {
    // The relay forwards everything, keeps the last secrets answer, and in `swap` serves that answer instead of the broker's.
    let kept: Buffer | undefined;
    let swap = false;
    const relay: Server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        void (async () => {
          if (swap && req.url === '/v1/secrets' && kept) {
            res.writeHead(200, { 'content-type': 'application/json' }).end(kept);
            return;
          }
          const upstream = await fetch(`${url}${req.url}`, { method: req.method, headers: { 'content-type': 'application/json' }, ...(req.method === 'POST' ? { body: Buffer.concat(chunks) } : {}) });
          const body = Buffer.from(await upstream.arrayBuffer());
          if (req.url === '/v1/secrets' && upstream.status === 200) kept = body;
          res.writeHead(upstream.status, { 'content-type': 'application/json' }).end(body);
        })().catch(() => res.destroy());
      });
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', r));
    try {
      const relayUrl = `http://127.0.0.1:${(relay.address() as AddressInfo).port}`;
      expect(await (await agent(relayUrl)).getSecret('r-e2e')).toBe(VALUE);
      swap = true;
      // Another enclave (its own key), same measurements: the answer carrying the first enclave's CMS is not for it.
      const err = await errorOf((await agent(relayUrl)).getSecret('r-e2e'));
      expect(err.code).toBe('UNTRUSTED_RESPONSE');
    } finally {
      relay.closeAllConnections();
      await new Promise<void>((r) => relay.close(() => r()));
    }
  });

  it('an answer whose CMS is for another key than the enclave\'s is refused by the agent: CMS_WRONG_RECIPIENT', async () => {
    kms.recipient.answer = 'wrong-key';
    try {
      const err = await errorOf((await agent()).getSecret('r-e2e'));
      expect(err.code).toBe('CMS_WRONG_RECIPIENT');
    } finally {
      kms.recipient.answer = 'cms';
    }
  });
});
