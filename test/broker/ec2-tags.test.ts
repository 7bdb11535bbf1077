/**
 * Instance binding by EC2 tag (`instances: { ec2Tag: { key, value } }`): the real
 * @aws-sdk/client-ec2 against moto_server (RunInstances with TagSpecifications,
 * then CreateTags/DeleteTags), through real brokers. The test enclave's documents
 * name the moto instance in module_id and PCR4, as a Nitro enclave's do.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { CreateTagsCommand, DeleteTagsCommand } from '@aws-sdk/client-ec2';
import type { JWK } from 'jose';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { loadConfigFile, resolveConfig } from '../../broker/config.js';
import { AwsEc2TagLookup } from '../../broker/ec2/aws-ec2-tags.js';
import { CachedInstanceTags, InstanceTagsUnavailableError, type InstanceTagLookup } from '../../broker/ec2/instance-tags.js';
import { decide, expectedPcr4 } from '../../broker/policy/decide.js';
import { NO_REVOCATIONS } from '../../broker/policy/types.js';
import { parseBinding } from '../../broker/policy/schema.js';
import { awsOf, closedPort } from '../support/moto.js';
import { APPROVED, TestEnclave, buildPcrs, valueOf } from '../support/enclave.js';
import { auditCodesIn, readyz as readiness } from '../support/broker.js';
import { cli } from '../support/cli.js';
import { until } from '../support/poll.js';
import { tempDirs } from '../support/temp-dirs.js';
import { ec2TagFixture } from '../support/ec2-tags.js';

const tempDir = tempDirs('keygate-ec2-');
const fx = ec2TagFixture(tempDir);
const { instance, broker, bindTagged, requestFrom } = fx;

describe('bindings restricted by EC2 tag (moto)', () => {
  it('release to an enclave on an instance carrying the tag; deny (INSTANCE_NOT_ALLOWED) on one with another value, without the tag, or whose PCR4 names another instance', async () => {
    const { broker: b, dir } = await broker(awsOf(fx.moto));
    const [tagged, other, untagged] = await Promise.all([instance({ role: 'payments', env: 'prod' }), instance({ role: 'reports' }), instance()]);
    await bindTagged(b, 'pay', 'role', 'payments');

    const ok = await requestFrom(b, tagged, ['pay']);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.secrets![0]).toMatchObject({ name: 'pay', version: 1 });

    for (const [id, pcr4For] of [[other, other], [untagged, untagged], [tagged, other]] as const) {
      const res = await requestFrom(b, id, ['pay'], pcr4For);
      expect(res.status).toBe(403);
      expect(res.body.error?.code).toBe('POLICY_DENIED');
      expect(auditCodesIn(dir).at(-1)).toBe('INSTANCE_NOT_ALLOWED');
    }
    expect(auditCodesIn(dir).filter((c) => c === 'RELEASED')).toHaveLength(1);
  }, 120_000);

  it('the released value opens in the requesting enclave', async () => {
    const { broker: b } = await broker(awsOf(fx.moto));
    const id = await instance({ team: 'a=b' });
    await bindTagged(b, 'eq', 'team', 'a=b');
    const pcrs = buildPcrs();
    pcrs.set(4, Buffer.from(expectedPcr4(id), 'hex'));
    const enclave = new TestEnclave(fx.pki, b.url, pcrs);
    const res = await enclave.request(['eq'], { moduleId: `${id}-enc0123456789abcdef` });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const claims = await enclave.open(res.body.secrets![0]!, (await (await fetch(`${b.url}/v1/broker-key`)).json()) as JWK);
    expect(valueOf(claims)).toBe('eq-value');
  }, 120_000);

  it('a removed tag stops releases within ec2.tagCacheSeconds: every request started that long after DeleteTags is denied', async () => {
    const ttlSeconds = 2;
    const { broker: b, dir } = await broker({ ...awsOf(fx.moto), tagCacheSeconds: ttlSeconds });
    const id = await instance({ role: 'payments' });
    await bindTagged(b, 'ttl', 'role', 'payments');
    expect((await requestFrom(b, id, ['ttl'])).status).toBe(200); // now cached
    await fx.ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'role' }] }));
    const removed = performance.now();
    const late: number[] = [];
    // Requests keep coming until a few have started after the TTL: those must all be denied.
    while (late.length < 3) {
      const started = performance.now() - removed;
      const res = await requestFrom(b, id, ['ttl']);
      if (started >= ttlSeconds * 1000) late.push(res.status);
      expect(performance.now() - removed).toBeLessThan(120_000);
    }
    expect(late).toEqual([403, 403, 403]);
    expect(auditCodesIn(dir).at(-1)).toBe('INSTANCE_NOT_ALLOWED');
    // Tagged again: released again, within the TTL too.
    await fx.ec2.send(new CreateTagsCommand({ Resources: [id], Tags: [{ Key: 'role', Value: 'payments' }] }));
    await until('a release once tagged again', async () => (await requestFrom(b, id, ['ttl'])).status === 200);
  }, 180_000);

  it('within the TTL the answer is reused: a tag removed meanwhile is not yet seen (the price of the cache, bounded by tagCacheSeconds)', async () => {
    const { broker: b } = await broker({ ...awsOf(fx.moto), tagCacheSeconds: 300 });
    const id = await instance({ role: 'payments' });
    await bindTagged(b, 'cached', 'role', 'payments');
    expect((await requestFrom(b, id, ['cached'])).status).toBe(200);
    await fx.ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'role' }] }));
    expect((await requestFrom(b, id, ['cached'])).status).toBe(200);
  }, 120_000);
});

describe('EC2 unreachable: fail closed', () => {
  it('releases nothing (503 STORE_UNAVAILABLE, audited INSTANCE_TAGS_UNAVAILABLE:<cause>), denies the batch, and /readyz is 503 naming EC2', async () => {
    const port = await closedPort();
    const { broker: b, dir } = await broker({ region: 'us-east-1', endpoint: `http://127.0.0.1:${port}`, credentials: awsOf(fx.moto).credentials, requestTimeoutMs: 5_000 });
    // Readiness asks EC2 only while some binding uses a tag.
    expect((await readiness(b)).status).toBe(200);
    const id = 'i-0123456789abcdef0';
    await bindTagged(b, 'pay', 'role', 'payments');
    await bindSecret(b.store, b.providers.get('local')!, { secret: 'plain', value: Buffer.from('plain-value'), allow: [pcrSet(APPROVED)], provider: 'local' });

    const res = await requestFrom(b, id, ['pay', 'plain']);
    expect(res.status).toBe(503);
    expect(res.body.error?.code).toBe('STORE_UNAVAILABLE');
    expect(res.body.secrets).toBeUndefined();
    expect(auditCodesIn(dir).slice(-2)).toEqual(['INSTANCE_TAGS_UNAVAILABLE:ECONNREFUSED', 'BATCH_DENIED']);
    expect(auditCodesIn(dir)).not.toContain('RELEASED');

    // A request that something else refuses is refused for that (EC2 is not even asked): POLICY_DENIED.
    const wrongBuild = buildPcrs(0x66);
    wrongBuild.set(4, Buffer.from(expectedPcr4(id), 'hex'));
    const denied = await new TestEnclave(fx.pki, b.url, wrongBuild).request(['pay'], { moduleId: `${id}-enc0123456789abcdef` });
    expect(denied.body.error?.code).toBe('POLICY_DENIED');
    expect(auditCodesIn(dir).at(-1)).toBe('PCR_MISMATCH');

    // Untouched secrets are still served.
    expect((await requestFrom(b, id, ['plain'])).status).toBe(200);

    await until('/readyz 503', async () => (await readiness(b)).status === 503);
    expect((await readiness(b)).reason).toMatch(/EC2 \(instance tags\) is unavailable/);
  }, 120_000);

  it('a broker whose EC2 answers is ready with tag bindings', async () => {
    const { broker: b } = await broker(awsOf(fx.moto));
    await bindTagged(b, 'pay', 'role', 'payments');
    await until('/readyz 200', async () => (await readiness(b)).status === 200);
  }, 60_000);
});

/** An HTTP proxy in front of moto that counts DescribeTags calls and holds their answers until released. */
async function countingProxy(target: string): Promise<{ url: string; count: () => number; release: () => void; server: Server }> {
  let count = 0;
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  const upstream = new URL(target);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const describeTags = body.toString().includes('Action=DescribeTags');
      if (describeTags) count++;
      void (describeTags ? released : Promise.resolve()).then(() => {
        const out = httpRequest({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        });
        out.on('error', () => res.destroy());
        out.end(body);
      });
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  fx.onClose(() => new Promise((r) => server.close(r)));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, count: () => count, release, server };
}

describe('lookups: single flight per instance, bounded cache', () => {
  it('concurrent requests from one instance cause one DescribeTags (counted at a proxy in front of EC2)', async () => {
    const proxy = await countingProxy(fx.moto.endpoint);
    const { broker: b, dir } = await broker({ ...awsOf(fx.moto), endpoint: proxy.url });
    const id = await instance({ role: 'payments' });
    await bindTagged(b, 'pay', 'role', 'payments');
    const requests = Array.from({ length: 8 }, () => requestFrom(b, id, ['pay']));
    await until('a DescribeTags call', async () => proxy.count() >= 1);
    proxy.release();
    const statuses = (await Promise.all(requests)).map((r) => r.status);
    expect(statuses).toEqual(Array(8).fill(200));
    expect(proxy.count()).toBe(1);
    expect(auditCodesIn(dir).filter((c) => c === 'RELEASED')).toHaveLength(8);
  }, 120_000);

  /** The real lookup against moto, counting calls and holding them until `open()`. */
  function gated(inner: InstanceTagLookup): InstanceTagLookup & { calls: string[]; open: () => void } {
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const calls: string[] = [];
    return {
      calls,
      open: () => open(),
      tagsOf: async (id) => {
        calls.push(id);
        await gate;
        return inner.tagsOf(id);
      },
      check: () => inner.check(),
      close: () => inner.close(),
    };
  }

  it('single flight and TTL at the cache: ten concurrent lookups are one call; after the TTL the next asks EC2 again and sees the change', async () => {
    const lookup = gated(new AwsEc2TagLookup(awsOf(fx.moto)));
    let now = 0;
    const cache = new CachedInstanceTags(lookup, { ttlMs: 30_000, maxEntries: 10, clock: () => now });
    try {
      const id = await instance({ role: 'payments' });
      const all = Array.from({ length: 10 }, () => cache.tagsOf(id));
      lookup.open();
      for (const tags of await Promise.all(all)) expect(tags.get('role')).toBe('payments');
      expect(lookup.calls).toEqual([id]);
      await fx.ec2.send(new DeleteTagsCommand({ Resources: [id], Tags: [{ Key: 'role' }] }));
      now = 29_999;
      expect((await cache.tagsOf(id)).get('role')).toBe('payments');
      expect(lookup.calls).toHaveLength(1);
      now = 30_000;
      expect((await cache.tagsOf(id)).has('role')).toBe(false);
      expect(lookup.calls).toHaveLength(2);
    } finally {
      cache.close();
    }
  }, 120_000);

  it('the cache holds at most maxEntries instances, dropping the oldest answer first', async () => {
    const lookup = gated(new AwsEc2TagLookup(awsOf(fx.moto)));
    lookup.open();
    const cache = new CachedInstanceTags(lookup, { ttlMs: 60_000, maxEntries: 2, clock: () => 0 });
    try {
      const [a, b, c] = await Promise.all([instance({ n: 'a' }), instance({ n: 'b' }), instance({ n: 'c' })]);
      for (const id of [a, b, c]) await cache.tagsOf(id);
      expect(cache.size).toBe(2);
      await cache.tagsOf(c);
      await cache.tagsOf(b);
      expect(lookup.calls).toEqual([a, b, c]);
      expect((await cache.tagsOf(a)).get('n')).toBe('a'); // a was dropped: asked again
      expect(lookup.calls).toEqual([a, b, c, a]);
      expect(cache.size).toBe(2);
    } finally {
      cache.close();
    }
  }, 120_000);

  it('a failed lookup is not cached, and names the cause (InstanceTagsUnavailableError)', async () => {
    const port = await closedPort();
    const cache = new CachedInstanceTags(new AwsEc2TagLookup({ region: 'us-east-1', endpoint: `http://127.0.0.1:${port}`, credentials: awsOf(fx.moto).credentials, maxAttempts: 1 }), { ttlMs: 60_000, maxEntries: 10 });
    try {
      for (let i = 0; i < 2; i++) {
        const err = await cache.tagsOf('i-0123456789abcdef0').then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(InstanceTagsUnavailableError);
        expect(err).toMatchObject({ code: 'INSTANCE_TAGS_UNAVAILABLE', ec2Error: 'ECONNREFUSED' });
      }
      expect(cache.size).toBe(0);
    } finally {
      cache.close();
    }
  }, 60_000);
});

describe('binding schema, config and CLI', () => {
  it('@aws-sdk/client-ec2 is loaded on demand: only aws-ec2-tags.ts imports it, and nothing imports that module statically', () => {
    const root = new URL('../../', import.meta.url);
    const text = (file: string): string => readFileSync(new URL(file, root), 'utf8');
    expect(text('broker/ec2/aws-ec2-tags.ts')).toMatch(/from '@aws-sdk\/client-ec2'/);
    expect(text('broker/ec2/instance-tags.ts')).not.toMatch(/from '@aws-sdk/);
    expect(text('broker/ec2/instance-tags.ts')).toContain("import('./aws-ec2-tags.js')");
    for (const file of ['broker/broker.ts', 'broker/release.ts', 'broker/ec2/instance-tags.ts', 'broker/config.ts']) {
      expect(text(file), file).not.toMatch(/from '\.\/(ec2\/)?aws-ec2-tags\.js'|from '@aws-sdk\/client-ec2'/);
    }
  });

  const base = { secret: 's', version: 1, provider: 'local', ciphertext: 'AA==', text: true, allow: [{ pcrs: APPROVED }], allowDebug: false, ttlSeconds: 60, revoked: false, createdAt: '2026-01-01T00:00:00Z', updatedAt: '2026-01-01T00:00:00Z' };

  it('instances is { ids } or { ec2Tag: { key, value } }, exactly one', () => {
    expect(parseBinding({ ...base, instances: { ec2Tag: { key: 'role', value: '' } } }).instances).toEqual({ ec2Tag: { key: 'role', value: '' } });
    const refused = (instances: unknown): string | undefined => {
      try {
        parseBinding({ ...base, instances });
        return undefined;
      } catch (err) {
        return (err as { path?: string }).path;
      }
    };
    expect(refused({ ids: ['i-0123456789abcdef0'], ec2Tag: { key: 'a', value: 'b' } })).toBe('binding.instances');
    expect(refused({})).toBe('binding.instances');
    expect(refused({ ec2Tag: { key: '', value: 'b' } })).toBe('binding.instances.ec2Tag.key');
    expect(refused({ ec2Tag: { key: 'k'.repeat(129), value: 'b' } })).toBe('binding.instances.ec2Tag.key');
    expect(refused({ ec2Tag: { key: 'a', value: 'v'.repeat(257) } })).toBe('binding.instances.ec2Tag.value');
    expect(refused({ ec2Tag: { key: 'a', value: 'b', extra: 1 } })).toBe('binding.instances.ec2Tag.extra');
    expect(refused({ ec2Tag: { key: 'a\n', value: 'b' } })).toBe('binding.instances.ec2Tag.key');
  });

  it('decide: the tag is checked last and only with the tags at hand (without them: INSTANCE_TAGS_UNAVAILABLE; a PCR mismatch or foreign PCR4 outranks it)', () => {
    const id = 'i-0123456789abcdef0';
    const binding = parseBinding({ ...base, instances: { ec2Tag: { key: 'role', value: 'pay' } } });
    const identity = (pcr0 = APPROVED[0], pcr4 = expectedPcr4(id)) => ({ moduleId: `${id}-enc01`, pcrs: { ...APPROVED, 0: pcr0, 4: pcr4 }, debug: false });
    const reason = (d: ReturnType<typeof decide>): string => (d.allow ? 'allow' : d.reason);
    expect(reason(decide(binding, identity(), NO_REVOCATIONS, new Map(), new Map([['role', 'pay']])))).toBe('allow');
    expect(reason(decide(binding, identity(), NO_REVOCATIONS, new Map(), new Map([['role', 'Pay']])))).toBe('INSTANCE_NOT_ALLOWED');
    expect(reason(decide(binding, identity(), NO_REVOCATIONS, new Map(), new Map()))).toBe('INSTANCE_NOT_ALLOWED');
    expect(reason(decide(binding, identity(), NO_REVOCATIONS))).toBe('INSTANCE_TAGS_UNAVAILABLE');
    expect(reason(decide(binding, identity('aa'.repeat(48)), NO_REVOCATIONS))).toBe('PCR_MISMATCH');
    expect(reason(decide(binding, identity(APPROVED[0], expectedPcr4('i-0000000000000000a')), NO_REVOCATIONS, new Map(), new Map([['role', 'pay']])))).toBe('INSTANCE_NOT_ALLOWED');
  });

  it('config ec2 is checked: unknown settings and out-of-range values are refused', () => {
    const config = (ec2: unknown) => () => resolveConfig({ ec2: ec2 as never });
    expect(config({ tagCacheSeconds: 30, region: 'eu-west-1', endpoint: 'https://ec2.eu-west-1.amazonaws.com', requestTimeoutMs: 2000 })).not.toThrow();
    expect(config({ tagCacheSeconds: 301 })).toThrow(/ec2.tagCacheSeconds must be an integer in 0..300/);
    expect(config({ maxCachedInstances: 0 })).toThrow(/ec2.maxCachedInstances/);
    expect(config({ tagTtl: 1 })).toThrow(/ec2: unknown setting "tagTtl"/);
    expect(config({ endpoint: 'ftp://x' })).toThrow(/ec2.endpoint must be an http\(s\) URL/);
  });

  it('a config file may not carry ec2.credentials (the SDK credential chain only)', async () => {
    const dir = tempDir();
    const file = join(dir, 'keygate.json');
    writeFileSync(file, JSON.stringify({ ec2: { tagCacheSeconds: 10, credentials: { accessKeyId: 'a', secretAccessKey: 'b' } } }));
    await expect(loadConfigFile(file)).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/ec2.credentials is not allowed in a config file/) });
    writeFileSync(file, JSON.stringify({ ec2: { tagCacheSeconds: 10, region: 'eu-west-1' } }));
    expect((await loadConfigFile(file)).ec2).toEqual({ tagCacheSeconds: 10, region: 'eu-west-1' });
  });

  it('keygate bind --instance-tag KEY=VALUE stores the restriction, which the broker enforces; bad flags are usage errors', async () => {
    const { broker: b, dir } = await broker(awsOf(fx.moto));
    const storeFlags = ['--store', join(dir, 'store'), '--state', join(dir, 'state')];
    const pcrArgs = ['--pcr0', APPROVED[0], '--pcr1', APPROVED[1], '--pcr2', APPROVED[2]];
    const bind = await cli(['bind', 'cli-tag', ...pcrArgs, '--instance-tag', 'role=pay=ments', '--value-stdin', ...storeFlags], 'cli-value');
    expect(bind.stderr).toBe('');
    expect(bind.status).toBe(0);
    expect(JSON.parse(readFileSync(join(dir, 'store', 'bindings', 'cli-tag.json'), 'utf8')).instances).toEqual({ ec2Tag: { key: 'role', value: 'pay=ments' } });
    expect((await cli(['list', ...storeFlags])).stdout).toContain('instances tagged role=pay=ments');
    const [yes, no] = await Promise.all([instance({ role: 'pay=ments' }), instance({ role: 'payments' })]);
    expect((await requestFrom(b, yes, ['cli-tag'])).status).toBe(200);
    expect((await requestFrom(b, no, ['cli-tag'])).status).toBe(403);

    const noEquals = await cli(['bind', 'x', ...pcrArgs, '--instance-tag', 'role', '--value-stdin', ...storeFlags], 'v');
    expect(noEquals.status).toBe(2);
    expect(noEquals.stderr).toMatch(/--instance-tag: expected KEY=VALUE/);
    const both = await cli(['bind', 'x', ...pcrArgs, '--instance-tag', 'a=b', '--instance', 'i-0123456789abcdef0', '--value-stdin', ...storeFlags], 'v');
    expect(both.status).toBe(2);
    expect(both.stderr).toMatch(/not both/);
  }, 120_000);
});
