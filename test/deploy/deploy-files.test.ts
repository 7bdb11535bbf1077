/**
 * deploy/ (issue 16): every JSON file parses and has the shape its consumer expects (IAM / KMS policy,
 * broker config); every systemd ExecStart runs a keygate command with flags that command has (asked from
 * the CLI's own --help) and values it accepts; the hardening the README promises is there; and the ports
 * of the units and of the nitro-cli script are the code's defaults.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, posix, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_CONFIG, loadConfigFile } from '../../broker/config.js';
import { parseDestination } from '../../vsock-shim/forwarder.js';
import { parseDuration } from '../../cli/parse.js';
import { parseHostPort } from '../../lib/host-port.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEPLOY = join(ROOT, 'deploy');
const BIN = join(ROOT, 'bin/keygate.js');

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
}
const all = files(DEPLOY).map((f) => relative(DEPLOY, f).split('\\').join('/'));
const read = (name: string): string => readFileSync(join(DEPLOY, name), 'utf8');

/** A systemd unit's [Service] settings (each key -> every value it is given). */
function unit(name: string): Map<string, string[]> {
  const settings = new Map<string, string[]>();
  let section = '';
  for (const raw of read(name).replace(/\\\n/g, ' ').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(\w+)\]$/.exec(line);
    if (header) {
      section = header[1]!;
      continue;
    }
    const eq = line.indexOf('=');
    expect(eq, `${name}: ${line}`).toBeGreaterThan(0);
    const key = `${section}.${line.slice(0, eq)}`;
    settings.set(key, [...(settings.get(key) ?? []), line.slice(eq + 1)]);
  }
  return settings;
}

const units = all.filter((f) => f.endsWith('.service'));
const one = (settings: Map<string, string[]>, key: string): string | undefined => settings.get(key)?.at(-1);

/** The command lines (ExecStartPre, ExecStart) of a unit, as argv. */
function commandLines(name: string): string[][] {
  const u = unit(name);
  return [...(u.get('Service.ExecStartPre') ?? []), ...(u.get('Service.ExecStart') ?? [])].map((l) => {
    // Quotes or variables would change how systemd splits the line; these units use neither.
    expect(l, `${name}: ${l}`).not.toMatch(/["'$%]/);
    return l.replace(/^[-@:+!]+/, '').trim().split(/\s+/);
  });
}

function keygateHelp(command: string): string {
  const r = spawnSync(process.execPath, [BIN, command, '--help'], { encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

/** The flags (`--name`) of an argv and the value each takes, for flags followed by a value. */
function flags(argv: readonly string[]): Array<{ flag: string; value: string | undefined }> {
  const out: Array<{ flag: string; value: string | undefined }> = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) continue;
    const next = argv[i + 1];
    out.push({ flag: a, value: next !== undefined && !next.startsWith('--') ? next : undefined });
  }
  return out;
}

/** The default written in a source file as `env('NAME', 'value')`. */
function envDefault(source: string, name: string): string {
  const m = new RegExp(`env\\('${name}', '([^']+)'\\)`).exec(readFileSync(join(ROOT, source), 'utf8'));
  expect(m, `${source}: ${name}`).not.toBeNull();
  return m![1]!;
}

const APP = 'examples/enclave-app/server.mjs';

describe('deploy/: JSON', () => {
  it('holds the policies, the config and the units the README lists, and nothing it does not', () => {
    const listed = [...read('README.md').matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]!);
    expect(listed.length).toBeGreaterThanOrEqual(10);
    for (const f of listed) expect(all, f).toContain(f);
    for (const f of all.filter((f) => f !== 'README.md')) expect(listed, f).toContain(f);
  });

  it('every JSON file parses', () => {
    const json = all.filter((f) => f.endsWith('.json'));
    expect(json.length).toBeGreaterThanOrEqual(6);
    for (const f of json) expect(() => JSON.parse(read(f)), f).not.toThrow();
  });

  it('policies are IAM policy documents: version, statements with effect, actions and resources; IAM Sids are alphanumeric', () => {
    for (const f of all.filter((f) => /^(iam|kms)\/.*\.json$/.test(f))) {
      const policy = JSON.parse(read(f)) as { Version: string; Statement: Array<Record<string, unknown>> };
      expect(policy.Version, f).toBe('2012-10-17');
      expect(policy.Statement.length, f).toBeGreaterThan(0);
      const sids = policy.Statement.map((s) => s.Sid);
      expect(new Set(sids).size, f).toBe(sids.length);
      for (const s of policy.Statement) {
        expect(s.Sid, f).toMatch(/^[A-Za-z0-9]+$/);
        expect(['Allow', 'Deny'], f).toContain(s.Effect);
        expect(s.Action ?? s.NotAction, `${f} ${String(s.Sid)}`).toBeDefined();
        expect(s.Resource, `${f} ${String(s.Sid)}`).toBeDefined();
        // A key policy names who; an identity policy must not.
        if (f.startsWith('kms/')) expect(s.Principal, `${f} ${String(s.Sid)}`).toBeDefined();
        else expect(s.Principal, `${f} ${String(s.Sid)}`).toBeUndefined();
        const actions = [s.Action ?? []].flat() as string[];
        for (const a of actions) expect(a, f).toMatch(/^(kms|dynamodb|s3|ec2):[A-Za-z*]+$/);
        // Least privilege: no service-wide wildcards, no destructive table or bucket actions for the broker or CI.
        expect(actions.filter((a) => a.endsWith(':*'))).toEqual([]);
        if (f.startsWith('iam/')) expect(actions.filter((a) => /Delete(Table|Bucket|Object)|BypassGovernance|PutBucketPolicy/.test(a))).toEqual([]);
      }
    }
  });

  it('KMS: only the broker role may Decrypt; in Recipient mode only with matching attestation condition keys, and never without a document', () => {
    const broker = 'arn:aws:iam::111122223333:role/keygate-broker';
    type Statement = { Sid: string; Effect: string; Principal: { AWS: string }; Action: string | string[]; Condition?: Record<string, Record<string, unknown>> };
    const statements = (f: string): Statement[] => (JSON.parse(read(f)) as { Statement: Statement[] }).Statement;
    const decrypts = (s: Statement): boolean => [s.Action].flat().some((a) => a === 'kms:Decrypt' || a === 'kms:*');
    for (const f of ['kms/secrets-key-policy.json', 'kms/recipient-key-policy.json']) {
      const allow = statements(f).filter((s) => s.Effect === 'Allow' && decrypts(s));
      expect(allow.map((s) => s.Principal.AWS), f).toEqual([broker]);
      // Everyone else is denied Decrypt, whatever an IAM policy or grant says.
      const deny = statements(f).find((s) => s.Effect === 'Deny' && decrypts(s) && s.Condition?.StringNotEquals?.['aws:PrincipalArn'] === broker);
      expect(deny, f).toBeDefined();
    }
    const recipient = statements('kms/recipient-key-policy.json');
    const allow = recipient.find((s) => s.Effect === 'Allow' && decrypts(s))!;
    const keys = Object.keys(allow.Condition!.StringEqualsIgnoreCase!);
    expect(keys).toEqual(['kms:RecipientAttestation:ImageSha384', 'kms:RecipientAttestation:PCR1', 'kms:RecipientAttestation:PCR2']);
    for (const values of Object.values(allow.Condition!.StringEqualsIgnoreCase!)) for (const v of [values].flat()) expect(v).toMatch(/^[0-9a-f]{96}$/);
    const noDocument = recipient.find((s) => s.Effect === 'Deny' && decrypts(s) && s.Condition?.Null?.['kms:RecipientAttestation:ImageSha384'] === 'true');
    expect(noDocument).toBeDefined();
  });

  it('the broker policy gives the calls keygate makes and no table/bucket creation; the CI policy only reads and writes store items', () => {
    type Statement = { Action: string | string[] };
    const actions = (f: string): string[] => (JSON.parse(read(f)) as { Statement: Statement[] }).Statement.flatMap((s) => [s.Action].flat());
    const brokerActions = new Set(actions('iam/broker-policy.json'));
    for (const a of ['kms:Decrypt', 'kms:DescribeKey', 'kms:Encrypt', 'dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:Query', 'dynamodb:DeleteItem', 's3:PutObject', 's3:GetObject', 's3:ListBucketVersions', 's3:GetBucketObjectLockConfiguration', 'ec2:DescribeTags']) {
      expect(brokerActions.has(a), a).toBe(true);
    }
    expect([...brokerActions].filter((a) => /Create|UpdateTimeToLive|UpdateContinuousBackups/.test(a))).toEqual([]);
    expect(new Set(actions('iam/ci-policy.json'))).toEqual(new Set(['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem']));
  });
});

describe('deploy/: systemd units', () => {
  let work: string;
  beforeAll(() => {
    work = mkdtempSync(join(tmpdir(), 'keygate-deploy-'));
  });
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('there is a unit for the broker and one for the forwarder', () => {
    expect(units.sort()).toEqual(['systemd/keygate-broker.service', 'systemd/keygate-forward.service']);
  });

  it.each(units)('%s: every ExecStart runs `keygate COMMAND` with flags that command lists in its --help', (name) => {
    const lines = commandLines(name);
    expect(lines.length).toBeGreaterThan(0);
    for (const argv of lines) {
      expect(posix.basename(argv[0]!)).toBe('keygate');
      expect(posix.isAbsolute(argv[0]!)).toBe(true);
      const command = argv[1]!;
      expect(command).toMatch(/^[a-z-]+$/);
      const help = keygateHelp(command);
      for (const { flag } of flags(argv)) expect(help, `${name}: keygate ${command} ${flag}`).toMatch(new RegExp(`(^|[\\s\\[])${flag}(\\s|=|$|\\])`, 'm'));
      // Production units never use development mode.
      expect(argv).not.toContain('--dev');
    }
  });

  it.each(units)('%s: hardened (NoNewPrivileges, ProtectSystem=strict, its own user, Restart=on-failure, no capabilities)', (name) => {
    const u = unit(name);
    expect(one(u, 'Service.NoNewPrivileges')).toBe('yes');
    expect(one(u, 'Service.ProtectSystem')).toBe('strict');
    expect(one(u, 'Service.ProtectHome')).toBe('yes');
    expect(one(u, 'Service.PrivateTmp')).toBe('yes');
    expect(one(u, 'Service.Restart')).toBe('on-failure');
    expect(one(u, 'Service.CapabilityBoundingSet')).toBe('');
    expect(one(u, 'Service.DynamicUser') === 'yes' || (one(u, 'Service.User') ?? 'root') !== 'root').toBe(true);
    expect(one(u, 'Install.WantedBy')).toBe('multi-user.target');
  });

  it('the broker unit: its --check-config line accepts deploy/broker.json (admin key paths pointed at real keys), and ReadWritePaths cover exactly its store, state and audit directories', () => {
    const u = unit('systemd/keygate-broker.service');
    const [pre, start] = commandLines('systemd/keygate-broker.service');
    expect(start!.slice(1)).toEqual(['broker', '--config', '/etc/keygate/broker.json']);
    expect(pre!.slice(1)).toEqual(['broker', '--config', '/etc/keygate/broker.json', '--check-config']);

    const config = JSON.parse(read('broker.json')) as { store: string; stateDir: string; auditFile: string; adminKeys: string[]; listen: string };
    const writable = one(u, 'Service.ReadWritePaths')!.split(/\s+/).sort();
    expect(writable).toEqual([config.store, config.stateDir, dirname(config.auditFile)].sort());
    // StateDirectory creates them (a missing ReadWritePaths entry would stop the unit from starting).
    expect(one(u, 'Service.StateDirectory')!.split(/\s+/).map((d) => `/var/lib/${d}`)).toEqual(expect.arrayContaining(writable));

    const adminKeys = config.adminKeys.map((p) => {
      const file = join(work, posix.basename(p));
      writeFileSync(file, JSON.stringify(generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' })));
      return file;
    });
    const copy = join(work, 'broker.json');
    writeFileSync(copy, JSON.stringify({ ...config, adminKeys }));
    const r = spawnSync(process.execPath, [BIN, ...pre!.slice(1).map((a) => (a === '/etc/keygate/broker.json' ? copy : a))], { cwd: work, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    const checked = JSON.parse(r.stdout) as { config: Record<string, unknown>; trust: { approvalsRequired: number; adminKeys: unknown[]; dev: boolean } };
    expect(checked.config).toMatchObject({ listen: config.listen, store: config.store, stateDir: config.stateDir });
    expect(checked.trust).toMatchObject({ dev: false, approvalsRequired: 2 });
    expect(checked.trust.adminKeys).toHaveLength(2);
    // Nothing was created: --check-config starts nothing.
    expect(existsSync(config.store)).toBe(false);
  });

  it('deploy/broker.json passes the broker\'s config loader (no unknown settings) and listens on the default port', async () => {
    const loaded = await loadConfigFile(join(DEPLOY, 'broker.json'));
    expect(parseHostPort(loaded.listen!)?.port).toBe(parseHostPort(DEFAULT_CONFIG.listen)?.port);
  });

  it('the forwarder unit: listens on the vsock port the enclave app dials and allows only the broker the app names, with values the command accepts', () => {
    const [argv, ...rest] = commandLines('systemd/keygate-forward.service');
    expect(rest).toEqual([]);
    expect(argv![1]).toBe('forward');
    const values = new Map(flags(argv!).map((f) => [f.flag, f.value]));
    expect([...values.keys()].filter((f) => f === '--allow')).toHaveLength(1);

    const dialled = /^vsock:3:(\d+)$/.exec(envDefault(APP, 'KEYGATE_FORWARDER'));
    expect(dialled).not.toBeNull();
    expect(values.get('--listen')).toBe(`vsock:${dialled![1]}`);
    // `keygate get`'s default transport dials the same port.
    expect(readFileSync(join(ROOT, 'cli/commands/get.ts'), 'utf8')).toContain(`values.transport ?? 'vsock:3:${dialled![1]}'`);
    expect(dialled![1]).not.toBe('9000');

    const allow = parseDestination(values.get('--allow')!);
    expect(`${allow.host}:${allow.port}`).toBe(envDefault(APP, 'KEYGATE_BROKER'));
    expect(allow.port).toBe(parseHostPort(DEFAULT_CONFIG.listen)!.port);
    expect(parseDuration(values.get('--idle-timeout')!, '--idle-timeout')).toBeGreaterThan(0);
    expect(Number.isInteger(Number(values.get('--max-connections')))).toBe(true);
  });
});

describe('deploy/run-enclave.sh', () => {
  const script = read('run-enclave.sh');
  const variable = (name: string): string => {
    const m = new RegExp(`^${name}=(?:\\$\\{${name}:-)?([^}\\s]+)\\}?$`, 'm').exec(script);
    expect(m, name).not.toBeNull();
    return m![1]!;
  };

  it('runs nitro-cli run-enclave with an EIF, CPU, memory and an enclave CID that is not a reserved one', () => {
    const line = script.split('\n').find((l) => l.startsWith('nitro-cli run-enclave '));
    expect(line).toBeDefined();
    for (const flag of ['--eif-path', '--cpu-count', '--memory', '--enclave-cid']) expect(line).toContain(flag);
    expect(Number(variable('ENCLAVE_CID'))).toBeGreaterThanOrEqual(4);
    expect(spawnSync('sh', ['-n', join(DEPLOY, 'run-enclave.sh')]).status).toBe(0);
  });

  it('names the vsock ports and the broker the code uses by default', () => {
    expect(`vsock:3:${variable('FORWARDER_VSOCK_PORT')}`).toBe(envDefault(APP, 'KEYGATE_FORWARDER'));
    expect(variable('APP_VSOCK_PORT')).toBe(envDefault(APP, 'APP_VSOCK_PORT'));
    expect(variable('BROKER')).toBe(envDefault(APP, 'KEYGATE_BROKER'));
    const forward = commandLines('systemd/keygate-forward.service')[0]!;
    expect(forward).toContain(`vsock:${variable('FORWARDER_VSOCK_PORT')}`);
    expect(forward).toContain(variable('BROKER'));
    expect(script).toContain('keygate-forward.service');
  });
});
