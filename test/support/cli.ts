/**
 * Runs `keygate` in this process through `main(argv, io, now)` with captured
 * output (`cli`), or as the real bin in a subprocess (`keygate`,
 * `keygateServer`): keep the subprocess for what only the real process shows
 * (exit status, the real stdout/stderr, signals, environment).
 */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { main } from '../../cli/main.js';

export const BIN = fileURLToPath(new URL('../../bin/keygate.js', import.meta.url));

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the CLI in this process: `input` is its standard input (empty when
 * absent, as for a subprocess without input), `cwd` its working directory for
 * the call (tests in a file run one at a time, so changing it is safe).
 */
export async function cli(args: string[], input?: string | Uint8Array, cwd?: string, now: () => number = Date.now): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const bytes = typeof input === 'string' ? Buffer.from(input) : input;
  const io = {
    out: (text: string): void => void (stdout += text),
    err: (text: string): void => void (stderr += text),
    stdin: async function* (): AsyncIterable<Uint8Array> {
      if (bytes?.length) yield bytes;
    },
  };
  const previous = process.cwd();
  if (cwd) process.chdir(cwd);
  try {
    const status = await main(args, io, now);
    return { status, stdout, stderr };
  } finally {
    if (cwd) process.chdir(previous);
  }
}

export function keygate(args: string[], input?: string | Uint8Array, cwd?: string): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, encoding: 'utf8', timeout: 30_000, ...(cwd ? { cwd } : {}) });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts a long-running `keygate` command and resolves once its stdout matches `ready`. */
export async function keygateServer(args: string[], ready: RegExp, cwd?: string): Promise<{ match: RegExpMatchArray; stop: () => Promise<number | null>; output: () => string }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const match = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${ready}: ${out}${err}`)), 20_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = out.match(ready);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${out}${err}`)));
  });
  return {
    match,
    output: () => out + err,
    stop: () =>
      new Promise((resolve) => {
        child.once('exit', (code) => resolve(code));
        child.kill('SIGTERM');
      }),
  };
}
