import type { ChildProcess, Serializable } from 'node:child_process';

/**
 * The value of the next message from `child` that carries `key`, after sending `send` (when given): how every
 * bench process asks its children (broker, enclave hosts) for a figure. Rejects if the child exits first,
 * naming it (`label`), so a crashed child fails the bench instead of hanging it.
 */
export function nextMessage<T>(child: ChildProcess, key: string, send?: Serializable, label = 'child process'): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: unknown): void => {
      if (typeof m !== 'object' || m === null || !(key in m)) return;
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve((m as Record<string, T>)[key]!);
    };
    const onExit = (code: number | null): void => reject(new Error(`${label} exited ${code}`));
    child.on('message', onMessage);
    child.once('exit', onExit);
    if (send !== undefined) child.send(send);
  });
}
