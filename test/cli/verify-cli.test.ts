/**
 * `keygate verify`, in process through main() with captured output; the real
 * bin as a subprocess for its exit statuses and streams.
 */
import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixtureBytes, fixturePath, realDocuments } from '../support/fixtures.js';
import { createTestPki } from '../support/pki.js';
import { cli, keygate, type Run } from '../support/cli.js';

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
  it.each(realDocuments)('$file verifies at its timestamp with --json', async (entry) => {
    const run = await cli(['verify', fixturePath(entry.file), '--at', String(entry.timestamp_ms), '--allow-debug', '--json']);
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

  it('prints a human summary without --json', async () => {
    const run = await cli(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms)]);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^VALID/);
    expect(run.stdout).toContain(r01.module_id);
    expect(run.stdout).toContain(r01.pcrs!.PCR0);
  });

  it('reads base64 from stdin and hex from a file, and takes ISO 8601 times', async () => {
    const at = new Date(r01.timestamp_ms).toISOString();
    const b64 = await cli(['verify', '-', '--at', at, '--json'], Buffer.from(fixtureBytes(r01.file)).toString('base64') + '\n');
    expect(b64.status).toBe(0);
    expect((json(b64) as { document: { moduleId: string } }).document.moduleId).toBe(r01.module_id);
    const hexFile = join(dir, 'doc.hex');
    writeFileSync(hexFile, Buffer.from(fixtureBytes(r01.file)).toString('hex'));
    expect((await cli(['verify', hexFile, '--at', String(r01.timestamp_ms)])).status).toBe(0);
    const raw = await cli(['verify', '-', '--at', String(r01.timestamp_ms)], fixtureBytes(r01.file));
    expect(raw.status).toBe(0);
  });

  it('accepts matching --pcr, --nonce and --max-age requirements', async () => {
    const nonce = (json(await cli(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--json'])) as { document: { nonce: string } })
      .document.nonce;
    const run = await cli([
      'verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms + 60_000),
      '--pcr', `0=${r01.pcrs!.PCR0}`, '--pcr', `2=${r01.pcrs!.PCR2}`, '--nonce', nonce, '--max-age', '5m',
    ]);
    expect(run.status).toBe(0);
  });
});

describe('keygate verify: invalid documents (exit 1)', () => {
  const invalid = async (args: string[], code: string, input?: string): Promise<void> => {
    const run = await cli([...args, '--json'], input);
    expect(run.status).toBe(1);
    const out = json(run);
    expect(Object.keys(out)).toEqual(['valid', 'code', 'message']);
    expect(out.valid).toBe(false);
    expect(out.code).toBe(code);
    expect(typeof out.message).toBe('string');
    expect(run.stderr).toBe('');
  };

  it('foreign root', async () => invalid(['verify', fixturePath('foreign-root.cbor'), '--at', '1734080745008'], 'UNTRUSTED_ROOT'));
  it('bad signature', async () => invalid(['verify', fixturePath('bad-signature.cbor'), '--at', String(r01.timestamp_ms)], 'BAD_SIGNATURE'));
  it('self-signed chain (cabundle: null)', async () => invalid(['verify', fixturePath('self-signed-chain.cbor'), '--at', '1713379906'], 'MALFORMED_PAYLOAD'));
  it('debug enclave without --allow-debug', async () => invalid(['verify', fixturePath(debugDoc.file), '--at', String(debugDoc.timestamp_ms)], 'DEBUG_MODE'));
  it('wall-clock time long after the leaf expired', async () => invalid(['verify', fixturePath(r01.file)], 'CERT_EXPIRED'));
  it('PCR mismatch', async () => invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--pcr', `0=${'ab'.repeat(48)}`], 'PCR_MISMATCH'));
  it('nonce mismatch', async () => invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--nonce', '00'.repeat(32)], 'NONCE_MISMATCH'));
  it('too old for --max-age', async () => invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms + 301_000), '--max-age', '300'], 'DOC_EXPIRED'));
  it('garbage text that happens to be hex', async () => {
    const file = join(dir, 'garbage.hex');
    writeFileSync(file, 'deadbeef');
    await invalid(['verify', file], 'MALFORMED_COSE');
  });
  // An empty input was readable: it holds a document, and that document is invalid (exit 1, not 2).
  it('empty stdin', async () => invalid(['verify', '-'], 'MALFORMED_COSE', ''));
  it('whitespace-only stdin', async () => invalid(['verify', '-'], 'MALFORMED_COSE', ' \n\t\n'));
  it('empty file', async () => {
    const file = join(dir, 'empty.cbor');
    writeFileSync(file, '');
    await invalid(['verify', file], 'MALFORMED_COSE');
  });
  // Real documents are a few KiB: a larger input is not read to its end (/dev/zero never ends) and is invalid.
  it('an input over 1 MiB, from a file or stdin', async () => {
    const file = join(dir, 'huge.cbor');
    writeFileSync(file, Buffer.alloc(1024 * 1024 + 1, 0x84));
    await invalid(['verify', file], 'MALFORMED_COSE');
    await invalid(['verify', '-'], 'MALFORMED_COSE', 'ab'.repeat(600 * 1024));
  });
  it('an endless input (/dev/zero)', async () => invalid(['verify', '/dev/zero'], 'MALFORMED_COSE'));
  it('a real document under a configured test root only', async () => {
    const pki = await createTestPki(r01.timestamp_ms);
    const rootFile = join(dir, 'test-root.pem');
    writeFileSync(rootFile, pki.root.pem);
    await invalid(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--root', rootFile], 'UNTRUSTED_ROOT');
  });

  it('prints a one-line human verdict without --json', async () => {
    const run = await cli(['verify', fixturePath('foreign-root.cbor'), '--at', '1734080745008']);
    expect(run.status).toBe(1);
    expect(run.stdout).toMatch(/^INVALID UNTRUSTED_ROOT: /);
  });
});

describe('keygate verify: usage errors (exit 2, no stack trace)', () => {
  const usage = async (args: string[], pattern: RegExp, input?: string): Promise<void> => {
    const run = await cli(args, input);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(pattern);
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(run.stdout).toBe('');
  };

  it('no document', async () => usage(['verify'], /exactly one document/));
  it('two documents', async () => usage(['verify', 'a', 'b'], /exactly one document/));
  it('unknown option', async () => usage(['verify', fixturePath(r01.file), '--frobnicate'], /unknown option --frobnicate/));
  it('missing file', async () => usage(['verify', join(dir, 'nope.cbor')], /cannot read .*ENOENT/));
  it('directory instead of a file', async () => usage(['verify', dir], /cannot read/));
  it('bad --at', async () => usage(['verify', fixturePath(r01.file), '--at', 'yesterday'], /--at/));
  it('bad --max-age', async () => usage(['verify', fixturePath(r01.file), '--max-age', '5 minutes'], /--max-age/));
  it('bad --pcr form', async () => usage(['verify', fixturePath(r01.file), '--pcr', '0:abcd'], /--pcr/));
  it('bad --pcr index', async () => usage(['verify', fixturePath(r01.file), '--pcr', `32=${'00'.repeat(48)}`], /--pcr/));
  it('bad --pcr length', async () => usage(['verify', fixturePath(r01.file), '--pcr', '0=abcd'], /32, 48 or 64/));
  it('repeated --pcr', async () => usage(['verify', fixturePath(r01.file), '--pcr', `0=${'00'.repeat(48)}`, '--pcr', `0=${'00'.repeat(48)}`], /twice/));
  it('bad --nonce', async () => usage(['verify', fixturePath(r01.file), '--nonce', 'xyz'], /--nonce/));
  it('missing --root file', async () => usage(['verify', fixturePath(r01.file), '--root', join(dir, 'none.pem')], /--root/));
  it('--root file without certificates', async () => {
    const file = join(dir, 'empty.pem');
    writeFileSync(file, 'hello\n');
    await usage(['verify', fixturePath(r01.file), '--root', file], /--root/);
  });
  it('--root file with a certificate that cannot be used', async () => {
    const file = join(dir, 'bad.pem');
    writeFileSync(file, '-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n');
    await usage(['verify', fixturePath(r01.file), '--at', String(r01.timestamp_ms), '--root', file], /configured root/);
  });
  it('text that is neither hex nor base64', async () => usage(['verify', '-'], /neither hex nor base64/, 'this is not a document!'));
  it('unknown command', async () => usage(['frobnicate'], /unknown command/));
});

describe('keygate top level', () => {
  it('--help exits 0 and lists verify', async () => {
    const run = await cli(['--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('verify');
  });
  it('verify --help exits 0', async () => {
    const run = await cli(['verify', '--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('--allow-debug');
  });
});

// What only the real bin shows: its exit status and what reaches the process's stdout and stderr.
describe('keygate verify as the real bin (subprocess)', () => {
  it('exit 0: one JSON line on stdout, nothing on stderr; raw bytes on stdin', () => {
    const run = keygate(['verify', '-', '--at', String(r01.timestamp_ms), '--json'], fixtureBytes(r01.file));
    expect(run.status).toBe(0);
    expect(run.stderr).toBe('');
    expect((json(run) as { valid: boolean; document: { moduleId: string } })).toMatchObject({ valid: true, document: { moduleId: r01.module_id } });
  });
  it('exit 1: the verdict on stdout, nothing on stderr', () => {
    const run = keygate(['verify', fixturePath('foreign-root.cbor'), '--at', '1734080745008']);
    expect(run.status).toBe(1);
    expect(run.stdout).toMatch(/^INVALID UNTRUSTED_ROOT: /);
    expect(run.stderr).toBe('');
  });
  it('exit 2: a usage error on stderr, no stack trace, nothing on stdout', () => {
    const run = keygate(['verify', fixturePath(r01.file), '--frobnicate']);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/unknown option --frobnicate/);
    expect(run.stderr).not.toMatch(/\n\s+at /);
    expect(run.stdout).toBe('');
  });
  it('--help exits 0 on stdout; no command exits 2', () => {
    const help = keygate(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('verify');
    expect(keygate([]).status).toBe(2);
  });
});
