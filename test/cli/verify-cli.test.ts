/** `keygate verify` run as a real subprocess through the package's bin. */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fixtureBytes, fixturePath, realDocuments } from '../support/fixtures.js';
import { createTestPki } from '../support/pki.js';

const BIN = fileURLToPath(new URL('../../bin/keygate.js', import.meta.url));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function keygate(args: string[], input?: string | Uint8Array): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function json(run: Run): Record<string, unknown> {
  expect(run.stdout.trim().split('\n')).toHaveLength(1);
  return JSON.parse(run.stdout) as Record<string, unknown>;
}

const r01 = realDocuments.find((d) => d.file === 'real-01.cbor')!;
const debugDoc = realDocuments.find((d) => d.debug_mode)!;
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('keygate verify: valid documents', () => {
  it.each(realDocuments)('$file verifies at its timestamp with --json', (entry) => {
    const run = keygate(['verify', fixturePath(entry.file), '--at', String(entry.timestamp_ms), '--allow-debug', '--json']);
    expect(run.status).toBe(0);
    const out = json(run) as { valid: boolean; document: Record<string, unknown> };
    expect(out.valid).toBe(true);
    const doc = out.document as {
      moduleId: string;
      timestamp: number;
      digest: string;
      pcrs: Record<string, string>;
      publicKey: string | null;
      userData: string | null;
      nonce: string | null;
      debug: boolean;
      certificate: { subject: string; notBefore: string; notAfter: string; sha256: string };
    };
    expect(Object.keys(doc)).toEqual(['moduleId', 'timestamp', 'digest', 'pcrs', 'publicKey', 'userData', 'nonce', 'debug', 'certificate']);
    expect(doc.moduleId).toBe(entry.module_id);
    expect(doc.timestamp).toBe(entry.timestamp_ms);
    expect(doc.digest).toBe('SHA384');
    for (const [name, value] of Object.entries(entry.pcrs!)) expect(doc.pcrs[name.slice(3)]).toBe(value);
    expect(Object.keys(doc.pcrs)).toHaveLength(entry.pcr_count!);
    expect(doc.publicKey === null ? null : doc.publicKey.length / 2).toBe(entry.public_key_len);
    expect(doc.userData === null ? null : doc.userData.length / 2).toBe(entry.user_data_len);
    expect(doc.nonce === null ? null : doc.nonce.length / 2).toBe(entry.nonce_len);
    expect(doc.debug).toBe(entry.debug_mode);
    expect(Object.keys(doc.certificate)).toEqual(['subject', 'notBefore', 'notAfter', 'sha256']);
    expect(doc.certificate.subject).toContain(`CN=${entry.module_id}`);
    expect(doc.certificate.notBefore).toBe(entry.leaf_not_before);
    expect(doc.certificate.notAfter).toBe(entry.leaf_not_after);
    expect(doc.certificate.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('prints a human summary without --json', () => {
    const run = keygate(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms)]);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^VALID/);
    expect(run.stdout).toContain(r01.module_id);
    expect(run.stdout).toContain(r01.pcrs!.PCR0);
  });

  it('reads base64 from stdin and hex from a file, and takes ISO 8601 times', () => {
    const at = new Date(r01.timestamp_ms).toISOString();
    const b64 = keygate(['verify', '-', '--at', at, '--json'], Buffer.from(fixtureBytes(r01.file)).toString('base64') + '\n');
    expect(b64.status).toBe(0);
    expect((json(b64) as { document: { moduleId: string } }).document.moduleId).toBe(r01.module_id);
    const hexFile = join(dir, 'doc.hex');
    writeFileSync(hexFile, Buffer.from(fixtureBytes(r01.file)).toString('hex'));
    expect(keygate(['verify', hexFile, '--at', String(r01.timestamp_ms)]).status).toBe(0);
    const raw = keygate(['verify', '-', '--at', String(r01.timestamp_ms)], fixtureBytes(r01.file));
    expect(raw.status).toBe(0);
  });

  it('accepts matching --pcr, --nonce and --max-age requirements', () => {
    const nonce = (json(keygate(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--json'])) as { document: { nonce: string } })
      .document.nonce;
    const run = keygate([
      'verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms + 60_000),
      '--pcr', `0=${r01.pcrs!.PCR0}`, '--pcr', `2=${r01.pcrs!.PCR2}`, '--nonce', nonce, '--max-age', '5m',
    ]);
    expect(run.status).toBe(0);
  });
});

describe('keygate verify: invalid documents (exit 1)', () => {
  const invalid = (args: string[], code: string, input?: string): void => {
    const run = keygate([...args, '--json'], input);
    expect(run.status).toBe(1);
    const out = json(run);
    expect(Object.keys(out)).toEqual(['valid', 'code', 'message']);
    expect(out.valid).toBe(false);
    expect(out.code).toBe(code);
    expect(typeof out.message).toBe('string');
    expect(run.stderr).toBe('');
  };

  it('foreign root', () => invalid(['verify', fixturePath('foreign-root.cbor'), '--at', '1734080745008'], 'UNTRUSTED_ROOT'));
  it('bad signature', () => invalid(['verify', fixturePath('bad-signature.cbor'), '--at', String(r01.timestamp_ms)], 'BAD_SIGNATURE'));
  it('self-signed chain (cabundle: null)', () => invalid(['verify', fixturePath('self-signed-chain.cbor'), '--at', '1713379906'], 'MALFORMED_PAYLOAD'));
  it('debug enclave without --allow-debug', () => invalid(['verify', fixturePath(debugDoc.file), '--at', String(debugDoc.timestamp_ms)], 'DEBUG_MODE'));
  it('wall-clock time long after the leaf expired', () => invalid(['verify', fixturePath(r01.file)], 'CERT_EXPIRED'));
  it('PCR mismatch', () => invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--pcr', `0=${'ab'.repeat(48)}`], 'PCR_MISMATCH'));
  it('nonce mismatch', () => invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--nonce', '00'.repeat(32)], 'NONCE_MISMATCH'));
  it('too old for --max-age', () => invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms + 301_000), '--max-age', '300'], 'DOC_EXPIRED'));
  it('garbage text that happens to be hex', () => {
    const file = join(dir, 'garbage.hex');
    writeFileSync(file, 'deadbeef');
    invalid(['verify', file], 'MALFORMED_COSE');
  });
  // An empty input was readable: it holds a document, and that document is invalid (exit 1, not 2).
  it('empty stdin', () => invalid(['verify', '-'], 'MALFORMED_COSE', ''));
  it('whitespace-only stdin', () => invalid(['verify', '-'], 'MALFORMED_COSE', ' \n\t\n'));
  it('empty file', () => {
    const file = join(dir, 'empty.cbor');
    writeFileSync(file, '');
    invalid(['verify', file], 'MALFORMED_COSE');
  });
  // Real documents are a few KiB: a larger input is not read to its end (/dev/zero never ends) and is invalid.
  it('an input over 1 MiB, from a file or stdin', () => {
    const file = join(dir, 'huge.cbor');
    writeFileSync(file, Buffer.alloc(1024 * 1024 + 1, 0x84));
    invalid(['verify', file], 'MALFORMED_COSE');
    invalid(['verify', '-'], 'MALFORMED_COSE', 'ab'.repeat(600 * 1024));
  });
  it('an endless input (/dev/zero)', () => invalid(['verify', '/dev/zero'], 'MALFORMED_COSE'));
  it('a real document under a configured test root only', async () => {
    const pki = await createTestPki(r01.timestamp_ms);
    const rootFile = join(dir, 'test-root.pem');
    writeFileSync(rootFile, pki.root.pem);
    invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--root', rootFile], 'UNTRUSTED_ROOT');
  });

  it('prints a one-line human verdict without --json', () => {
    const run = keygate(['verify', fixturePath('foreign-root.cbor'), '--at', '1734080745008']);
    expect(run.status).toBe(1);
    expect(run.stdout).toMatch(/^INVALID UNTRUSTED_ROOT: /);
  });
});

describe('keygate verify: usage errors (exit 2, no stack trace)', () => {
  const usage = (args: string[], pattern: RegExp, input?: string): void => {
    const run = keygate(args, input);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(pattern);
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(run.stdout).toBe('');
  };

  it('no document', () => usage(['verify'], /exactly one document/));
  it('two documents', () => usage(['verify', 'a', 'b'], /exactly one document/));
  it('unknown option', () => usage(['verify', fixturePath(r01.file), '--frobnicate'], /Unknown option/));
  it('missing file', () => usage(['verify', join(dir, 'nope.cbor')], /cannot read .*ENOENT/));
  it('directory instead of a file', () => usage(['verify', dir], /cannot read/));
  it('bad --at', () => usage(['verify', fixturePath(r01.file), '--at', 'yesterday'], /--at/));
  it('bad --max-age', () => usage(['verify', fixturePath(r01.file), '--max-age', '5 minutes'], /--max-age/));
  it('bad --pcr form', () => usage(['verify', fixturePath(r01.file), '--pcr', '0:abcd'], /--pcr/));
  it('bad --pcr index', () => usage(['verify', fixturePath(r01.file), '--pcr', `32=${'00'.repeat(48)}`], /--pcr/));
  it('bad --pcr length', () => usage(['verify', fixturePath(r01.file), '--pcr', '0=abcd'], /32, 48 or 64/));
  it('repeated --pcr', () => usage(['verify', fixturePath(r01.file), '--pcr', `0=${'00'.repeat(48)}`, '--pcr', `0=${'00'.repeat(48)}`], /twice/));
  it('bad --nonce', () => usage(['verify', fixturePath(r01.file), '--nonce', 'xyz'], /--nonce/));
  it('missing --root file', () => usage(['verify', fixturePath(r01.file), '--root', join(dir, 'none.pem')], /--root/));
  it('--root file without certificates', () => {
    const file = join(dir, 'empty.pem');
    writeFileSync(file, 'hello\n');
    usage(['verify', fixturePath(r01.file), '--root', file], /--root/);
  });
  it('--root file with a certificate that cannot be used', () => {
    const file = join(dir, 'bad.pem');
    writeFileSync(file, '-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n');
    usage(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--root', file], /configured root/);
  });
  it('text that is neither hex nor base64', () => usage(['verify', '-'], /neither hex nor base64/, 'this is not a document!'));
  it('unknown command', () => usage(['frobnicate'], /unknown command/));
});

describe('keygate top level', () => {
  it('--help exits 0 and lists verify', () => {
    const run = keygate(['--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('verify');
  });
  it('verify --help exits 0', () => {
    const run = keygate(['verify', '--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('--allow-debug');
  });
});
