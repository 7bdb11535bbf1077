/**
 * Start-up stays cheap because each command loads only what it uses (issue 15, goal 6). Structural,
 * never timed: the real bin runs in a subprocess that logs every module it loads (test/support/module-log.mjs),
 * and the test names the packages and project modules a command must not reach.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { BIN } from '../support/cli.js';
import { fixturePath, realDocuments } from '../support/fixtures.js';

const MODULE_LOG = fileURLToPath(new URL('../support/module-log.mjs', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/', import.meta.url));
/** Heavy packages no start-up path below may load: the HTTP server, the AWS SDK, JOSE. */
const HEAVY = /[\\/]node_modules[\\/](hono|@hono|@aws-sdk|@smithy|jose)[\\/]/;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-startup-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `keygate ...args` and answers the files (paths) of every module it loaded. */
function modulesLoadedBy(name: string, args: string[]): string[] {
  const log = join(dir, `${name}.log`);
  const r = spawnSync(process.execPath, ['--import', pathToFileURL(MODULE_LOG).href, BIN, ...args], {
    env: { ...process.env, KEYGATE_MODULE_LOG: log, KEYGATE_CONFIG: '' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return readFileSync(log, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (l.startsWith('cjs:') ? l.slice(4) : l.startsWith('file:') ? fileURLToPath(l) : l));
}

const project = (files: string[]): string[] => files.filter((f) => f.startsWith(DIST)).map((f) => f.slice(DIST.length).replaceAll('\\', '/'));

describe('keygate start-up loads only what the command uses', () => {
  it('keygate --help loads no package and no command module', () => {
    const loaded = modulesLoadedBy('help', ['--help']);
    expect(loaded.filter((f) => HEAVY.test(f))).toEqual([]);
    expect(loaded.filter((f) => f.includes('node_modules'))).toEqual([]);
    expect(project(loaded).filter((f) => f.startsWith('cli/commands/') || f.startsWith('broker/') && !f.startsWith('broker/ops/errors'))).toEqual([]);
  });

  it('keygate verify FILE loads only the verification core (broker/verify, cbor-x) besides the CLI', () => {
    const doc = realDocuments[0]!;
    const loaded = modulesLoadedBy('verify', ['verify', fixturePath(doc.file), '--at', String(doc.timestamp_ms)]);
    expect(loaded.filter((f) => HEAVY.test(f))).toEqual([]);
    const packages = new Set(loaded.filter((f) => f.includes('node_modules')).map((f) => /node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/.exec(f)![1]!.replaceAll('\\', '/')));
    // cbor-x and what it loads for its optional native string extractor.
    const cbor = /^(cbor-x|cbor-extract|@cbor-extract\/[^/]+|node-gyp-build-optional-packages|detect-libc)$/;
    expect([...packages].filter((p) => !cbor.test(p))).toEqual([]);
    // broker/protocol/codes.js: the attestation error codes, declared once for verify and the broker API (it imports nothing).
    const core = new Set(['broker/ops/errors.js', 'broker/protocol/codes.js']);
    const outside = project(loaded).filter((f) => !f.startsWith('cli/') && !f.startsWith('broker/verify/') && !f.startsWith('lib/') && !core.has(f));
    expect(outside).toEqual([]);
    expect(project(loaded).filter((f) => f.startsWith('cli/commands/'))).toEqual(['cli/commands/verify.js']);
  });

  it('keygate list (file store) loads no HTTP server, AWS SDK or JOSE, and not the release path', () => {
    const loaded = modulesLoadedBy('list', ['list', '--store', join(dir, 'store'), '--state', join(dir, 'state')]);
    expect(loaded.filter((f) => HEAVY.test(f))).toEqual([]);
    expect(project(loaded).filter((f) => ['broker/release.js', 'broker/server.js', 'broker/broker.js', 'broker/verify/verify.js'].includes(f))).toEqual([]);
  });
});
