import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ChildRequest } from './child.js';
import { nextMessage } from './ipc.js';

/** The agent-phases broker (bench/agent-phases-child.ts), and how to ask it for a figure. */
export interface PhasesBroker {
  readonly child: ChildProcess;
  next<T>(key: string, send?: ChildRequest | 'phases'): Promise<T>;
}

/** Forks the broker both agent-phases shapes time (its files under BENCH_PHASES_STATE when set, e.g. tmpfs). */
export function forkPhasesBroker(): PhasesBroker {
  const child = fork(fileURLToPath(new URL('./agent-phases-child.ts', import.meta.url)), [], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    ...(process.env.BENCH_PHASES_STATE ? { env: { ...process.env, TMPDIR: process.env.BENCH_PHASES_STATE } } : {}),
  });
  return { child, next: (key, send) => nextMessage(child, key, send, 'agent-phases broker process') };
}
