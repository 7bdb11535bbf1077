/**
 * moto_server (moto: an independent implementation of the AWS APIs) on a free
 * loopback port, for tests against DynamoDB semantics nobody here wrote.
 * Started per test file, stopped after; missing moto fails loudly with what to
 * install rather than skipping.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';

export interface MotoServer {
  readonly endpoint: string;
  readonly region: string;
  readonly credentials: { readonly accessKeyId: string; readonly secretAccessKey: string };
  /** A table name no other test of this server uses. */
  tableName(prefix: string): string;
  stop(): Promise<void>;
}

const MISSING = 'moto_server is not installed (or not on PATH): the DynamoDB tests need it. Install it with `pip install "moto[server]==5.2.1"`.';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Whether moto_server can be run at all (checked once, synchronously, with a clear error). */
function assertInstalled(): void {
  const probe = spawnSync('moto_server', ['--help'], { stdio: 'ignore', timeout: 60_000 });
  if (probe.error || probe.status !== 0) throw new Error(`${MISSING} (${probe.error?.message ?? `exit ${probe.status}`})`);
}

/** Starts moto_server on 127.0.0.1 and waits until it answers (polling, generous bound for a loaded machine). */
export async function startMotoServer(options: { readonly readyTimeoutMs?: number } = {}): Promise<MotoServer> {
  assertInstalled();
  const deadline = Date.now() + (options.readyTimeoutMs ?? 60_000);
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn('moto_server', ['-H', '127.0.0.1', '-p', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    let gone = false;
    void exited.then(() => (gone = true));
    const endpoint = `http://127.0.0.1:${port}`;
    while (!gone && Date.now() < deadline) {
      // moto answers every path; its dashboard is a cheap probe that needs no signing.
      const ok = await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(2_000) }).then(
        (r) => r.status < 500,
        () => false,
      );
      if (ok) return server(child, endpoint, exited);
      await new Promise((r) => setTimeout(r, 100));
    }
    await stop(child, exited);
    // Lost a race for the port (another process took it between probe and bind): try another, within the deadline.
    if (gone && attempt < 3 && Date.now() < deadline && /address already in use/i.test(stderr)) continue;
    throw new Error(`moto_server did not answer on ${endpoint} within the deadline${gone ? ' (it exited)' : ''}: ${stderr.trim().slice(-1000)}`);
  }
}

async function stop(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

function server(child: ChildProcess, endpoint: string, exited: Promise<number | null>): MotoServer {
  const run = randomBytes(4).toString('hex');
  let n = 0;
  return {
    endpoint,
    region: 'us-east-1',
    // moto accepts any credentials; fixed ones keep the SDK away from the machine's real credential chain.
    credentials: { accessKeyId: 'AKIAMOTOTEST', secretAccessKey: 'moto-test-secret' },
    tableName: (prefix) => `${prefix}-${run}-${++n}`,
    stop: () => stop(child, exited),
  };
}
