/**
 * keygate/testing: the kit an enclave application's suite uses (startTestKit), through its source.
 * The packed package and the README example are exercised by packed-example.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { devPcrs, startTestKit, type TestKit } from '../../testing/index.js';
import { errorOf } from '../support/agent.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const quiet = { warn: (): void => {} };
const kits: TestKit[] = [];

async function kit(options: Parameters<typeof startTestKit>[0] = {}): Promise<TestKit> {
  const k = await startTestKit({ ...quiet, ...options });
  kits.push(k);
  return k;
}

/** The temporary directory behind a kit: the one that holds its audit file (<dir>/state/audit.jsonl). */
const dirOf = (k: TestKit): string => join(k.auditFile, '..', '..');

afterEach(async () => {
  for (const k of kits.splice(0)) await k.close();
});

describe('startTestKit', () => {
  it('releases a bound secret to its simulated enclave (text as a string, other bytes as bytes), bound to the simulator image PCR0/1/2', async () => {
    const k = await kit();
    await k.bind('db', 'hunter2');
    await k.bind('blob', Uint8Array.of(0, 255, 1, 254));
    const agent = await k.agent();
    expect(await agent.getSecret('db')).toBe('hunter2');
    expect(await agent.getSecret('blob')).toEqual(Uint8Array.of(0, 255, 1, 254));
    expect(k.pcrs).toEqual(k.simulator.pcrs);
    expect(k.pcrs[0]).toBe(devPcrs()[0]);
    const release = readFileSync(k.auditFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r.decision === 'release');
    expect(release).toMatchObject({ secret: 'db' });
  });

  it('refuses a secret bound to other PCRs (POLICY_DENIED), and one revoked (POLICY_DENIED; SECRET_REVOKED in the audit)', async () => {
    const k = await kit();
    await k.bind('other-image', 'v', { pcrs: { 0: 'ab'.repeat(48), 1: k.pcrs[1], 2: k.pcrs[2] } });
    await k.bind('revoked', 'v');
    await k.revoke('revoked');
    const agent = await k.agent();
    expect((await errorOf(agent.getSecret('other-image'))).code).toBe('POLICY_DENIED');
    expect((await errorOf(agent.getSecret('revoked'))).code).toBe('POLICY_DENIED');
    expect(readFileSync(k.auditFile, 'utf8')).toContain('SECRET_REVOKED');
    // Bound again, it is released again.
    await k.bind('revoked', 'v2');
    expect(await agent.getSecret('revoked')).toBe('v2');
  });

  it('simulates another image through options.pcrs (laid over devPcrs) and binds to given PCRs', async () => {
    const pcr0 = 'cd'.repeat(48);
    const k = await kit({ pcrs: { 0: pcr0 } });
    expect(k.pcrs[0]).toBe(pcr0);
    expect(k.pcrs[1]).toBe(devPcrs()[1]);
    await k.bind('mine', 'yes');
    await k.bind('dev-image', 'no', { pcrs: { 0: devPcrs()[0], 1: devPcrs()[1], 2: devPcrs()[2] } });
    const agent = await k.agent();
    expect(await agent.getSecret('mine')).toBe('yes');
    expect((await errorOf(agent.getSecret('dev-image'))).code).toBe('POLICY_DENIED');
  });

  it('refuses bad bindings with ADMIN_REFUSED (invalid name, empty value, PCRs a binding cannot hold) and stores none of them', async () => {
    const k = await kit();
    await expect(k.bind('../evil', 'v')).rejects.toMatchObject({ code: 'ADMIN_REFUSED' });
    await expect(k.bind('empty', '')).rejects.toMatchObject({ code: 'ADMIN_REFUSED' });
    await expect(k.bind('all', 'v', { pcrs: k.pcrs })).rejects.toMatchObject({ code: 'ADMIN_REFUSED', message: 'options.pcrs: pcrs.5: is not a known field' });
    await expect(k.bind('no-pcr2', 'v', { pcrs: { 0: k.pcrs[0], 1: k.pcrs[1] } })).rejects.toMatchObject({ code: 'ADMIN_REFUSED', message: 'options.pcrs: pcrs.2: is required' });
    await expect(k.bind('bad-hex', 'v', { pcrs: { 0: 'xyz', 1: k.pcrs[1], 2: k.pcrs[2] } })).rejects.toMatchObject({ code: 'ADMIN_REFUSED' });
    const agent = await k.agent();
    for (const name of ['empty', 'all', 'no-pcr2', 'bad-hex']) expect((await errorOf(agent.getSecret(name))).code).toBe('POLICY_DENIED');
    // The agent is told POLICY_DENIED only; the audit says why: no such secret was stored.
    const denials = readFileSync(k.auditFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { decision?: string; code?: string; secret?: string }).filter((r) => r.decision === 'deny');
    expect(denials.map((r) => [r.secret, r.code])).toEqual(['empty', 'all', 'no-pcr2', 'bad-hex'].map((n) => [n, 'UNKNOWN_SECRET']));
  });

  it('kits are isolated: own temporary directory, port on 127.0.0.1 and development root (another kit\'s documents: UNTRUSTED_ROOT)', async () => {
    const [a, b] = [await kit(), await kit()];
    expect(a.brokerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(b.brokerUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(a.brokerUrl).not.toBe(b.brokerUrl);
    expect(dirOf(a)).not.toBe(dirOf(b));
    expect(dirOf(a).startsWith(tmpdir())).toBe(true);
    expect(a.brokerKey.x).not.toBe(b.brokerKey.x);
    await a.bind('db', 'a-value');
    const crossed = await a.agent({ nsm: b.simulator.client() });
    expect((await errorOf(crossed.getSecret('db'))).code).toBe('UNTRUSTED_ROOT');
    // agentOptions is what an application passes to its own createAgent.
    expect(a.agentOptions()).toMatchObject({ brokerUrl: a.brokerUrl, brokerKey: a.brokerKey });
  });

  it('close() closes its agents (AGENT_CLOSED) and the broker, removes the temporary directory, and may be called twice', async () => {
    const k = await startTestKit(quiet);
    await k.bind('db', 'v');
    const agent = await k.agent();
    expect(await agent.getSecret('db')).toBe('v');
    const dir = dirOf(k);
    expect(existsSync(join(dir, 'store'))).toBe(true);
    await k.close();
    await k.close();
    expect(existsSync(dir)).toBe(false);
    expect((await errorOf(agent.getSecret('db'))).code).toBe('AGENT_CLOSED');
    await expect(fetch(`${k.brokerUrl}/v1/broker-key`)).rejects.toThrow();
  });

  it('passes the broker log lines to options.log (none by default)', async () => {
    const lines: string[] = [];
    await kit({ log: (level, message) => lines.push(`${level} ${message}`) });
    expect(lines).toContain('warn DEVELOPMENT MODE: the NSM simulator root is trusted; not for production secrets');
    expect(lines.some((l) => l.startsWith('info keygate broker listening'))).toBe(true);
  });

  it('writes nothing to the current directory and leaves nothing in the temporary directory after close (separate process)', async () => {
    const cwd = mkdtempSync(join(tmpdir(), 'keygate-testkit-cwd-'));
    const tmp = mkdtempSync(join(tmpdir(), 'keygate-testkit-tmp-'));
    try {
      const entry = pathToFileURL(join(ROOT, 'dist/testing/index.js')).href;
      const script = `
        import { readdirSync } from 'node:fs';
        const { startTestKit } = await import(${JSON.stringify(entry)});
        const kit = await startTestKit({ warn: () => {} });
        await kit.bind('db', 'hunter2');
        const value = await (await kit.agent()).getSecret('db');
        const during = readdirSync(process.env.TMPDIR).length;
        await kit.close();
        console.log(JSON.stringify({ value, during }));
      `;
      const out = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
        const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd, env: { ...process.env, TMPDIR: tmp } });
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (code) => resolve({ code, stdout, stderr }));
      });
      expect(out.stderr).toBe('');
      expect(out.code).toBe(0);
      expect(JSON.parse(out.stdout)).toEqual({ value: 'hunter2', during: 1 });
      expect(readdirSync(cwd)).toEqual([]);
      expect(readdirSync(tmp)).toEqual([]);
    } finally {
      rmSync(cwd, { recursive: true, force: true });
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
