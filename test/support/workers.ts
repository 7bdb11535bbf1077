// What the `keygate broker --workers N` suites share: the primary's log of its workers (polling: ./poll.ts).

/** Worker pids the primary logged ("broker worker listening"), by worker number, latest last. */
export function workerPids(stderr: string): Array<{ worker: number; pid: number }> {
  return stderr.split('\n').flatMap((l) => {
    try {
      const r = JSON.parse(l) as { message?: string; worker?: number; pid?: number };
      return r.message === 'broker worker listening' && typeof r.worker === 'number' ? [{ worker: r.worker, pid: r.pid! }] : [];
    } catch {
      return [];
    }
  });
}

/** Whether a process with this pid exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
