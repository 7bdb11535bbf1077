/**
 * A moto_server (an independent implementation of the AWS APIs) on a free
 * 127.0.0.1 port, for tests of the AWS backends. One per test file: use
 * per-test table/bucket names. Where moto differs from AWS in a way a test
 * relies on, the test says so.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';

export interface Moto {
  /** http://127.0.0.1:PORT */
  readonly endpoint: string;
  /** Environment for the AWS SDK (and for keygate subprocesses): region, test credentials, endpoint. */
  readonly env: Readonly<Record<'AWS_REGION' | 'AWS_ACCESS_KEY_ID' | 'AWS_SECRET_ACCESS_KEY' | 'AWS_ENDPOINT_URL', string>>;
  /** Stops the server (idempotent). */
  stop(): Promise<void>;
}

export const MOTO_MISSING = 'moto_server is needed for these tests: install it with `pip install "moto[server]==5.2.1"` (it must be on PATH)';

/**
 * moto_server as `moto_server` runs it, but serving one request at a time. moto's
 * threaded server does not make a conditional TransactWriteItems atomic against a
 * concurrent one (measured: 8 racing transactions all conditioned on one version,
 * two succeeded in 1 of 30 rounds), which DynamoDB guarantees; one request at a
 * time restores that, so the concurrency tests test keygate, not moto's locking.
 */
const SINGLE_THREADED_MOTO = [
  'import sys',
  'try:',
  '    from moto.server import DomainDispatcherApplication, create_backend_app',
  '    from werkzeug.serving import run_simple',
  'except ImportError as err:',
  '    sys.stderr.write("MOTO_IMPORT_FAILED %s\\n" % err)',
  '    sys.exit(3)',
  'run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), threaded=False)',
].join('\n');

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

/** Starts moto_server and resolves once it answers HTTP (bounded: 60 s). */
export async function startMoto(): Promise<Moto> {
  const port = await freePort();
  const endpoint = `http://127.0.0.1:${port}`;
  const child = spawn('python3', ['-c', SINGLE_THREADED_MOTO, '127.0.0.1', String(port)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
    await exited(child);
    clearTimeout(timer);
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    const failed = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(() => r(undefined), 100))]);
    if (failed) throw new Error((failed as NodeJS.ErrnoException).code === 'ENOENT' ? `${MOTO_MISSING} (python3 not found)` : `moto_server failed to start: ${failed.message}`);
    if (child.exitCode !== null) throw new Error(child.exitCode === 3 ? `${MOTO_MISSING} (${stderr.trim()})` : `moto_server exited with status ${child.exitCode}: ${stderr}`);
    try {
      await fetch(`${endpoint}/moto-api/`, { signal: AbortSignal.timeout(2_000) });
      break;
    } catch {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`moto_server did not answer on ${endpoint} within 60 s: ${stderr}`);
      }
    }
  }
  return {
    endpoint,
    env: { AWS_REGION: 'us-east-1', AWS_ACCESS_KEY_ID: 'testing', AWS_SECRET_ACCESS_KEY: 'testing', AWS_ENDPOINT_URL: endpoint },
    stop,
  };
}

/** A name unique within this process, for per-test tables. */
let counter = 0;
export function uniqueName(prefix: string): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${++counter}`;
}

/** The AWS SDK client settings of a moto server (its test credentials), for settings objects built in code. */
export function awsOf(m: Moto): { region: string; endpoint: string; credentials: { accessKeyId: string; secretAccessKey: string } } {
  return { region: m.env.AWS_REGION, endpoint: m.endpoint, credentials: { accessKeyId: m.env.AWS_ACCESS_KEY_ID, secretAccessKey: m.env.AWS_SECRET_ACCESS_KEY } };
}

/**
 * Settings for a DynamoDB-backed part (nonce registry, quarantine, call budget) whose table `table` is at moto, with
 * a deadline generous for a loaded machine; `extra` overrides any of them.
 */
export function motoTable(m: Moto, table: string, extra: Partial<DynamoDbTableSettings> = {}): DynamoDbTableSettings {
  return { kind: 'dynamodb', table, ...awsOf(m), requestTimeoutMs: 20_000, ...extra };
}

/** A loopback port nothing listens on (taken, then released): an unreachable endpoint. */
export function closedPort(): Promise<number> {
  return freePort();
}
