/**
 * Attacks on instance binding by EC2 tag, at runtime: real brokers, the real
 * @aws-sdk/client-ec2, moto_server behind a proxy on 127.0.0.1 that counts
 * DescribeTags calls (and the instance each asks about) and can hold, break
 * or rewrite EC2's answers. Documents whose module_id and PCR4 disagree or
 * name no instance, tags removed while a lookup is in flight, EC2 that hangs
 * or errs, many instances, many concurrent requests.
 */
import { describe, expect, it } from 'vitest';
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteTagsCommand } from '@aws-sdk/client-ec2';
import type { RunningBroker } from '../../broker/broker.js';
import { AwsEc2TagLookup } from '../../broker/ec2/aws-ec2-tags.js';
import { CachedInstanceTags, type InstanceTagLookup } from '../../broker/ec2/instance-tags.js';
import { awsOf } from '../support/moto.js';
import { TestEnclave, buildPcrs } from '../support/enclave.js';
import { auditCodesIn } from '../support/broker.js';
import { until } from '../support/poll.js';
import { tempDirs } from '../support/temp-dirs.js';
import { ec2TagFixture } from '../support/ec2-tags.js';

const tempDir = tempDirs('keygate-ec2-attack-');
const fx = ec2TagFixture(tempDir);
const { instance, bindTagged, requestAs, requestFrom } = fx;
/** A broker whose tag lookups go to moto's region and credentials, at `ec2Settings.endpoint` (a proxy in front of moto). */
const broker = (ec2Settings: Record<string, unknown>): Promise<{ broker: RunningBroker; dir: string }> => fx.broker({ ...awsOf(fx.moto), ...ec2Settings });

type Mode = 'forward' | 'hold' | 'hang' | 'error500' | 'lie';

/**
 * A proxy in front of moto. Counts DescribeTags calls with the instance each asks about. Modes for
 * DescribeTags: forward; hold (forward, keep EC2's answer until release(), at once after it); hang (never answer);
 * error500 (an InternalError, held until release(), at once after it); lie (EC2's answer for another instance, `liar`).
 */
async function ec2Proxy(): Promise<{ url: string; asked: string[]; answered: () => number; setMode: (m: Mode) => void; release: () => void; liar: { id: string } }> {
  const asked: string[] = [];
  let answered = 0;
  let mode: Mode = 'forward';
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const liar = { id: '' };
  const upstream = new URL(fx.moto.endpoint);
  const forward = (method: string, path: string, headers: IncomingHttpHeaders, body: Buffer): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> =>
    new Promise((resolve, reject) => {
      const out = httpRequest({ host: upstream.hostname, port: upstream.port, method, path, headers: { ...headers, 'content-length': String(body.length) } }, (up) => {
        const parts: Buffer[] = [];
        up.on('data', (c: Buffer) => parts.push(c));
        up.on('end', () => resolve({ status: up.statusCode ?? 502, headers: up.headers, body: Buffer.concat(parts) }));
      });
      out.on('error', reject);
      out.end(body);
    });
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const params = new URLSearchParams(body.toString());
      const describeTags = params.get('Action') === 'DescribeTags';
      const id = [...params.entries()].find(([k, v]) => /^Filter\.\d+\.Value\.1$/.test(k) && v.startsWith('i-'))?.[1];
      if (describeTags && id) asked.push(id);
      // hang: every DescribeTags (the readiness check's too); the others only questions about an instance.
      const current = describeTags && (id || mode === 'hang') ? mode : 'forward';
      void (async () => {
        if (current === 'hang') return;
        if (current === 'error500') {
          await released;
          res.writeHead(500, { 'content-type': 'text/xml' }).end('<Response><Errors><Error><Code>InternalError</Code><Message>boom</Message></Error></Errors><RequestID>x</RequestID></Response>');
          return;
        }
        // A lying EC2 answers with another instance's tags (its ResourceId): the broker must not lend them.
        const sent = current === 'lie' ? Buffer.from(body.toString().replace(encodeURIComponent(id!), encodeURIComponent(liar.id)).replace(id!, liar.id)) : body;
        const up = await forward(req.method!, req.url!, req.headers, sent);
        answered++;
        if (current === 'hold') await released;
        const { 'content-length': _l, 'transfer-encoding': _t, ...headers } = up.headers;
        res.writeHead(up.status, { ...headers, 'content-length': String(up.body.length) }).end(up.body);
      })().catch(() => res.destroy());
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  fx.onClose(
    () =>
      new Promise((r) => {
        server.close(r);
        server.closeAllConnections();
      }),
  );
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    asked,
    answered: () => answered,
    setMode: (m) => (mode = m),
    // Once released, a held mode answers at once: a question asked after release() (a request that did not join the
    // held lookup, or the retry after a failure, which is not cached) must not wait for a second release that never
    // comes (it hung until the broker's deadline and was audited TimeoutError, in about half the runs).
    release,
    liar,
  };
}

describe('the instance a document names', () => {
  it('module_id and PCR4 naming different instances: denied (INSTANCE_NOT_ALLOWED) either way round, and EC2 is never asked', async () => {
    const proxy = await ec2Proxy();
    const { broker: b, dir } = await broker({ endpoint: proxy.url });
    const [tagged, untagged] = await Promise.all([instance({ role: 'payments' }), instance()]);
    await bindTagged(b, 'pay', 'role', 'payments');
    for (const [moduleOf, pcr4Of] of [[tagged, untagged], [untagged, tagged]] as const) {
      const res = await requestAs(b, `${moduleOf}-enc0123456789abcdef`, pcr4Of, ['pay']);
      expect([res.status, res.body.error?.code, auditCodesIn(dir).at(-1)]).toEqual([403, 'POLICY_DENIED', 'INSTANCE_NOT_ALLOWED']);
    }
    // PCR4 left at zero (no instance measured) with the tagged instance's module_id.
    const zero = await new TestEnclave(fx.pki, b.url, buildPcrs()).request(['pay'], { moduleId: `${tagged}-enc0123456789abcdef` });
    expect([zero.status, auditCodesIn(dir).at(-1)]).toEqual([403, 'INSTANCE_NOT_ALLOWED']);
    expect(proxy.asked).toEqual([]);
    expect(auditCodesIn(dir)).not.toContain('RELEASED');
    // The control: the same instance in both is released (one lookup).
    expect((await requestFrom(b, tagged, ['pay'])).status).toBe(200);
    expect(proxy.asked).toEqual([tagged]);
  }, 120_000);

  it('malformed instance ids (wrong case, wildcards, lists, ARNs, too short or long) are never looked up, even when PCR4 measures the same text; denied', async () => {
    const proxy = await ec2Proxy();
    const { broker: b, dir } = await broker({ endpoint: proxy.url });
    const tagged = await instance({ role: 'payments' });
    await bindTagged(b, 'pay', 'role', 'payments');
    const ids = [
      tagged.toUpperCase(),
      tagged.replace('i-', 'I-'),
      'i-*',
      'i-0*',
      `${tagged},i-0123456789abcdef0`,
      `arn:aws:ec2:us-east-1:123456789012:instance/${tagged}`,
      'i-0123456',
      `i-${'0'.repeat(33)}`,
      `${tagged} `,
      `${tagged}\u0000`,
    ];
    for (const id of ids) {
      const res = await requestAs(b, `${id}-enc0123456789abcdef`, id, ['pay']);
      expect([id, res.status]).toEqual([id, 403]);
      expect(['INSTANCE_NOT_ALLOWED', 'DOCUMENT_INVALID']).toContain(auditCodesIn(dir).at(-1));
    }
    expect(proxy.asked).toEqual([]);
    expect(auditCodesIn(dir)).not.toContain('RELEASED');
  }, 120_000);

  it('a well-formed id EC2 does not know (another account\'s instance) is denied; so is an EC2 answer carrying another instance\'s tags', async () => {
    const proxy = await ec2Proxy();
    const { broker: b, dir } = await broker({ endpoint: proxy.url, tagCacheSeconds: 0 });
    const tagged = await instance({ role: 'payments' });
    const plain = await instance();
    await bindTagged(b, 'pay', 'role', 'payments');
    const foreign = 'i-0fedcba9876543210';
    let res = await requestFrom(b, foreign, ['pay']);
    expect([res.status, auditCodesIn(dir).at(-1)]).toEqual([403, 'INSTANCE_NOT_ALLOWED']);
    // A lying EC2 (or a relay on an http endpoint) answers the question about `plain` with `tagged`'s tags.
    proxy.liar.id = tagged;
    proxy.setMode('lie');
    res = await requestFrom(b, plain, ['pay']);
    expect([res.status, auditCodesIn(dir).at(-1)]).toEqual([403, 'INSTANCE_NOT_ALLOWED']);
    expect(proxy.asked).toEqual([foreign, plain]);
    expect(auditCodesIn(dir)).not.toContain('RELEASED');
  }, 120_000);
});

describe('a removed tag', () => {
  it('a request that starts tagCacheSeconds after the tag is removed is refused, even while a lookup asked before the removal is still in flight', async () => {
    const proxy = await ec2Proxy();
    const ttlSeconds = 1;
    const { broker: b } = await broker({ endpoint: proxy.url, tagCacheSeconds: ttlSeconds });
    const id = await instance({ role: 'payments' });
    await bindTagged(b, 'pay', 'role', 'payments');
    proxy.setMode('hold');
    const first = requestFrom(b, id, ['pay']);
    await until('EC2 to answer', () => proxy.answered() >= 1); // EC2 answered "tagged"; the answer is held on the way back
    proxy.setMode('forward');
    await fx.ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'role' }] }));
    const removed = performance.now();
    await until('the cached answer to expire', () => performance.now() - removed > ttlSeconds * 1000 + 100);
    const late = requestFrom(b, id, ['pay']);
    // It must ask EC2 again rather than wait for the old question's answer (bounded wait; the old code never asked).
    await until('a second DescribeTags', () => proxy.asked.length >= 2, 10_000).catch(() => undefined);
    proxy.release();
    const [a, l] = await Promise.all([first, late]);
    expect(a.status).toBe(200); // asked before the removal
    expect([l.status, l.body.error?.code]).toEqual([403, 'POLICY_DENIED']);
    expect(proxy.asked).toEqual([id, id]);
  }, 120_000);

  it('at the cache: a lookup asked more than the TTL ago is not joined; its late answer does not replace a newer one', async () => {
    let now = 0;
    const held: Array<() => void> = [];
    const inner = new AwsEc2TagLookup(awsOf(fx.moto));
    const calls: string[] = [];
    // EC2's answer is read at once, then held: the answer is from when the question was asked.
    const lookup: InstanceTagLookup = {
      tagsOf: async (i) => {
        calls.push(i);
        const tags = await inner.tagsOf(i);
        await new Promise<void>((r) => held.push(r));
        return tags;
      },
      check: () => inner.check(),
      close: () => inner.close(),
    };
    const cache = new CachedInstanceTags(lookup, { ttlMs: 1_000, maxEntries: 10, clock: () => now });
    try {
      const id = await instance({ role: 'payments' });
      const old = cache.tagsOf(id);
      await until('the first lookup', () => held.length === 1);
      await fx.ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'role' }] }));
      now = 500;
      const joined = cache.tagsOf(id); // within the TTL of the first question: joins it
      now = 1_000;
      const fresh = cache.tagsOf(id); // a TTL after the first question: asks again
      await until('the second lookup', () => held.length === 2, 5_000);
      expect(calls).toEqual([id, id]);
      held[1]!();
      expect((await fresh).has('role')).toBe(false);
      held[0]!();
      expect((await old).get('role')).toBe('payments');
      expect((await joined).get('role')).toBe('payments');
      // The old answer arrived last: the newer one stays cached.
      expect((await cache.tagsOf(id)).has('role')).toBe(false);
      expect(calls).toHaveLength(2);
    } finally {
      cache.close();
    }
  }, 120_000);
});

describe('EC2 unreachable or failing: nothing released, audited with the cause, /readyz says so', () => {
  it('an EC2 that accepts but never answers: refused within requestTimeoutMs (503, INSTANCE_TAGS_UNAVAILABLE:<cause>), /readyz 503', async () => {
    const proxy = await ec2Proxy();
    const { broker: b, dir } = await broker({ endpoint: proxy.url, requestTimeoutMs: 1_000 });
    await bindTagged(b, 'pay', 'role', 'payments');
    const id = await instance({ role: 'payments' });
    proxy.setMode('hang');
    const started = performance.now();
    const res = await requestFrom(b, id, ['pay']);
    expect([res.status, res.body.error?.code, res.body.secrets]).toEqual([503, 'STORE_UNAVAILABLE', undefined]);
    expect(performance.now() - started).toBeLessThan(30_000);
    expect(auditCodesIn(dir).at(-1)).toBe('INSTANCE_TAGS_UNAVAILABLE:TimeoutError');
    expect(auditCodesIn(dir)).not.toContain('RELEASED');
    // /readyz asks EC2 (DescribeTags) while a binding uses a tag: not ready, naming EC2.
    await until('/readyz 503', async () => (await fetch(`${b.url}/readyz`)).status === 503);
    expect(((await (await fetch(`${b.url}/readyz`)).json()) as { reason?: string }).reason).toMatch(/EC2 \(instance tags\) is unavailable/);
  }, 120_000);

  it('concurrent requests while EC2 errs: all refused 503, each audited with EC2\'s error; failures are not cached: the next request asks again', async () => {
    const proxy = await ec2Proxy();
    const { broker: b, dir } = await broker({ endpoint: proxy.url });
    await bindTagged(b, 'pay', 'role', 'payments');
    const id = await instance({ role: 'payments' });
    proxy.setMode('error500');
    const all = Array.from({ length: 6 }, () => requestFrom(b, id, ['pay']));
    await until('a DescribeTags call', () => proxy.asked.length >= 1);
    proxy.release();
    const answers = await Promise.all(all);
    expect(answers.map((r) => [r.status, r.body.error?.code])).toEqual(Array(6).fill([503, 'STORE_UNAVAILABLE']));
    expect(proxy.asked.length).toBeLessThanOrEqual(6);
    expect(auditCodesIn(dir).filter((c) => c.startsWith('INSTANCE_TAGS_UNAVAILABLE:'))).toEqual(Array(6).fill('INSTANCE_TAGS_UNAVAILABLE:InternalError'));
    expect(auditCodesIn(dir)).not.toContain('RELEASED');
    // Failures are not cached: a request after them asks EC2 again, and is refused with EC2's error while it still errs.
    const asked = proxy.asked.length;
    const again = await requestFrom(b, id, ['pay']);
    expect([again.status, proxy.asked.length, auditCodesIn(dir).at(-1)]).toEqual([503, asked + 1, 'INSTANCE_TAGS_UNAVAILABLE:InternalError']);
    // EC2 back, the next request is served.
    proxy.setMode('forward');
    const before = proxy.asked.length;
    expect((await requestFrom(b, id, ['pay'])).status).toBe(200);
    expect(proxy.asked.length).toBe(before + 1);
  }, 120_000);
});

describe('many instances, many requests', () => {
  it('many distinct instances: the broker remembers at most ec2.maxCachedInstances (the oldest answer is dropped and asked again)', async () => {
    const proxy = await ec2Proxy();
    const { broker: b, dir } = await broker({ endpoint: proxy.url, maxCachedInstances: 3, tagCacheSeconds: 300 });
    await bindTagged(b, 'pay', 'role', 'payments');
    const known = await Promise.all([instance({ role: 'payments' }), instance({ role: 'payments' })]);
    const strangers = Array.from({ length: 12 }, (_, i) => `i-${(0xa000 + i).toString(16).padStart(17, '0')}`);
    for (const id of known) expect((await requestFrom(b, id, ['pay'])).status).toBe(200);
    for (const id of known) expect((await requestFrom(b, id, ['pay'])).status).toBe(200); // cached: not asked again
    expect(proxy.asked).toEqual(known);
    // Twelve more instances push the first two out of a three-entry cache.
    for (const id of strangers) expect((await requestFrom(b, id, ['pay'])).status).toBe(403);
    expect(proxy.asked.slice(2).sort()).toEqual([...strangers].sort());
    for (const id of known) expect((await requestFrom(b, id, ['pay'])).status).toBe(200);
    expect(proxy.asked.slice(-2)).toEqual(known);
    expect(proxy.asked).toHaveLength(2 + strangers.length + 2);
    expect(auditCodesIn(dir).filter((c) => c === 'RELEASED')).toHaveLength(6);
  }, 180_000);

  it('concurrent requests from two instances: one DescribeTags per instance', async () => {
    const proxy = await ec2Proxy();
    const { broker: b } = await broker({ endpoint: proxy.url });
    await bindTagged(b, 'pay', 'role', 'payments');
    const [x, y] = await Promise.all([instance({ role: 'payments' }), instance({ role: 'payments' })]);
    proxy.setMode('hold');
    const all = [x, y, x, y, x, y, x, y].map((id) => requestFrom(b, id, ['pay']));
    await until('EC2 to answer twice', () => proxy.answered() >= 2);
    proxy.release();
    expect((await Promise.all(all)).map((r) => r.status)).toEqual(Array(8).fill(200));
    expect([...proxy.asked].sort()).toEqual([x, y].sort());
  }, 120_000);
});
