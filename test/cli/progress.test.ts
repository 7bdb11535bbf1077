/**
 * `describe-eif` and `record --eif` show reading progress for large images on a terminal only: never
 * when output is piped, never with --json. The terminal decision is a pure function; a real
 * pseudo-terminal (util-linux `script`) shows the progress line is drawn.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROGRESS_MIN_BYTES, ProgressMeter, progressFor, progressLine, shouldShowProgress } from '../../cli/progress.js';
import { buildEif, expectedPcrs, type EifParts } from '../support/eif.js';
import { BIN, cli, keygate } from '../support/cli.js';

let dir: string;
let big: string;
let bigParts: EifParts;
let small: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-progress-'));
  // Above the progress threshold: a kernel, a cmdline and a ramdisk of PROGRESS_MIN_BYTES + 1 MiB.
  bigParts = { kernel: Buffer.alloc(70_000, 7), cmdline: Buffer.from('console=ttyS0'), ramdisks: [Buffer.alloc(PROGRESS_MIN_BYTES + (1 << 20), 0x5a)] };
  big = join(dir, 'big.eif');
  writeFileSync(big, buildEif(bigParts));
  small = join(dir, 'small.eif');
  writeFileSync(small, buildEif({ kernel: Buffer.alloc(1000, 1), cmdline: Buffer.from('x'), ramdisks: [Buffer.alloc(4096, 2)] }));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const COMMIT = '0123456789abcdef0123456789abcdef01234567';
const TERMINAL = { stdoutIsTTY: true, stderrIsTTY: true, term: 'xterm-256color', json: false, totalBytes: PROGRESS_MIN_BYTES };

describe('shouldShowProgress (the terminal decision)', () => {
  it('shows progress only with both streams on a terminal that can redraw, without --json, for a large file', () => {
    expect(shouldShowProgress(TERMINAL)).toBe(true);
    expect(shouldShowProgress({ ...TERMINAL, term: undefined })).toBe(true);
    expect(shouldShowProgress({ ...TERMINAL, stdoutIsTTY: false })).toBe(false); // | grep PCR0, > out.txt
    expect(shouldShowProgress({ ...TERMINAL, stderrIsTTY: false })).toBe(false); // 2> log
    expect(shouldShowProgress({ ...TERMINAL, json: true })).toBe(false);
    expect(shouldShowProgress({ ...TERMINAL, term: 'dumb' })).toBe(false);
    expect(shouldShowProgress({ ...TERMINAL, totalBytes: PROGRESS_MIN_BYTES - 1 })).toBe(false);
  });

  it('is off when the io says nothing about terminals (captured output)', () => {
    expect(progressFor({ out: () => {}, err: () => {}, stdin: async function* () {} }, 'x.eif', { json: false })).toBeUndefined();
    const terminal = { stdout: true, stderr: true, term: 'xterm' };
    expect(progressFor({ out: () => {}, err: () => {}, stdin: async function* () {}, terminal }, 'x.eif', { json: true })).toBeUndefined();
    expect(progressFor({ out: () => {}, err: () => {}, stdin: async function* () {}, terminal }, 'x.eif', { json: false })).toBeDefined();
  });
});

describe('ProgressMeter', () => {
  it('draws at once, then at most once per interval, always the last update, and erases the line at the end', () => {
    const writes: string[] = [];
    let t = 0;
    const meter = new ProgressMeter((s) => writes.push(s), 'reading a.eif', () => t, 100);
    const MiB = 1 << 20;
    meter.update(1 * MiB, 40 * MiB); // drawn (first)
    t = 50;
    meter.update(2 * MiB, 40 * MiB); // throttled
    t = 99;
    meter.update(3 * MiB, 40 * MiB); // throttled
    t = 150;
    meter.update(20 * MiB, 40 * MiB); // drawn
    t = 160;
    meter.update(40 * MiB, 40 * MiB); // the end: drawn though within the interval
    meter.end();
    expect(writes).toEqual([
      `\r\x1b[K${progressLine('reading a.eif', MiB, 40 * MiB)}`,
      `\r\x1b[K${progressLine('reading a.eif', 20 * MiB, 40 * MiB)}`,
      `\r\x1b[K${progressLine('reading a.eif', 40 * MiB, 40 * MiB)}`,
      '\r\x1b[K',
    ]);
    expect(progressLine('reading a.eif', 20 * MiB, 40 * MiB)).toBe('reading a.eif:  50% (20.0 of 40.0 MiB)');
  });

  it('writes nothing at the end when it never drew', () => {
    const writes: string[] = [];
    new ProgressMeter((s) => writes.push(s), 'x').end();
    expect(writes).toEqual([]);
  });
});

/** Bytes a progress line would put on the terminal. */
const PROGRESS_BYTES = /\r|\x1b\[|reading .*%/;

describe('piped output carries no progress', () => {
  it('describe-eif and record --eif of a large image, run with pipes (as in CI or `| grep`)', () => {
    const d = keygate(['describe-eif', big]);
    expect(d.status, d.stderr).toBe(0);
    expect(d.stderr).toBe('');
    expect(d.stdout).not.toMatch(PROGRESS_BYTES);
    expect(d.stdout).toContain(`PCR0  ${expectedPcrs(bigParts)['0']}`);
    const r = keygate(['record', '--eif', big, '--name', 'piped', '--baselines', join(dir, 'baselines'), '--commit', COMMIT, '--builder', 'test']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).not.toMatch(PROGRESS_BYTES);
  }, 60_000);

  it('in-process (captured io) neither', async () => {
    const r = await cli(['describe-eif', big]);
    expect([r.status, r.stderr]).toEqual([0, '']);
  }, 60_000);
});

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

/** Runs keygate on a pseudo-terminal (stdout and stderr both on it) via util-linux `script`; returns what the terminal received. */
function onTerminal(args: string[]): { status: number | null; output: string } {
  const command = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  const r = spawnSync('script', ['-qfec', command, '/dev/null'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000, env: { ...process.env, TERM: 'xterm' } });
  return { status: r.status, output: r.stdout };
}

describe.skipIf(!hasScript)('on a terminal (script -qfec: a real pseudo-terminal)', () => {
  it('describe-eif of a large image draws progress on the terminal, erases it, then prints the PCRs', () => {
    const r = onTerminal(['describe-eif', big]);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(new RegExp(`\\r\\x1b\\[Kreading ${big.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: +\\d+% \\(\\d+\\.\\d of \\d+\\.\\d MiB\\)`));
    expect(r.output).toContain('100% (');
    const erased = r.output.lastIndexOf('\r\x1b[K');
    const pcrs = r.output.indexOf(`PCR0  ${expectedPcrs(bigParts)['0']}`);
    expect(pcrs).toBeGreaterThan(erased); // the result is printed after the line was erased
  }, 60_000);

  it('describe-eif --json on a terminal prints only the JSON', () => {
    const r = onTerminal(['describe-eif', big, '--json']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).not.toMatch(/reading |\x1b\[/);
    expect(JSON.parse(r.output.trim())).toMatchObject({ valid: true, pcrs: expectedPcrs(bigParts) });
  }, 60_000);

  it('record --eif of a large image draws progress; a small image draws none', () => {
    const r = onTerminal(['record', '--eif', big, '--name', 'tty', '--baselines', join(dir, 'baselines'), '--commit', COMMIT, '--builder', 'test']);
    expect(r.status, r.output).toBe(0);
    expect(r.output).toMatch(/reading .*big\.eif: +100% /);
    expect(r.output).toMatch(/recorded .*tty\.json/);
    const s = onTerminal(['describe-eif', small]);
    expect(s.status, s.output).toBe(0);
    expect(s.output).not.toMatch(/reading |\x1b\[K/);
  }, 60_000);
});
