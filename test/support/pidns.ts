/**
 * Subprocesses in their own pid namespace, optionally with their own hostname:
 * a container on this kernel (same boot id) whose pids mean nothing here.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/** Why `unshare` cannot be used here (no unshare(1), not root, namespaces disabled), or null when it works. */
export const UNSHARE_UNAVAILABLE: string | null = ((): string | null => {
  const r = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', '--uts', 'true'], { encoding: 'utf8', timeout: 20_000 });
  if (r.error) return `unshare(1) is not runnable: ${r.error.message}`;
  if (r.status !== 0) return `unshare --pid --fork --mount-proc --uts failed (it needs root): ${r.stderr.trim()}`;
  return null;
})();

export interface Contained {
  /** pid, in the test's namespace, of the program inside (pid 1 of its own namespace). */
  readonly pid: number;
  /** What it printed so far. */
  output(): string;
  /** SIGKILLs the program inside and waits until it is gone. */
  kill9(): Promise<void>;
}

/** The child of `parent` (the program `unshare --fork` started), found through /proc. */
function childOf(parent: number): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent) return Number(entry);
    } catch {
      // exited meanwhile
    }
  }
  return undefined;
}

/**
 * Runs `node --import tsx <script> ...args` as pid 1 of a new pid namespace (with
 * hostname `host` in a new UTS namespace when given) and resolves once its
 * stdout matches `ready`. The unshare process is pushed to `track` so the
 * caller's afterEach can kill it (--kill-child takes the program with it).
 */
export async function startContained(script: string, args: readonly string[], ready: RegExp, track: ChildProcess[], host?: string): Promise<Contained> {
  const flags = ['--pid', '--fork', '--kill-child', '--mount-proc', ...(host ? ['--uts'] : [])];
  const shell = `${host ? 'hostname "$KG_HOST" && ' : ''}exec "$0" "$@"`;
  const child = spawn('unshare', [...flags, 'sh', '-c', shell, process.execPath, '--import', 'tsx', script, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, KG_HOST: host ?? '' },
  });
  track.push(child);
  let out = '';
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} never became ready: ${out}`)), 60_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve();
      }
    });
    void exited.then(() => reject(new Error(`${script} exited ${child.exitCode ?? child.signalCode}: ${out}`)));
  });
  const pid = childOf(child.pid!);
  if (pid === undefined) throw new Error('the program inside the pid namespace was not found in /proc');
  return {
    pid,
    output: () => out,
    kill9: async () => {
      process.kill(pid, 'SIGKILL');
      await exited; // unshare exits once its child is gone
    },
  };
}
