/**
 * A check whose answer is reused for a while: one run at a time, its result
 * (success for `okMs`, failure for `failMs`) shared by every caller until it
 * expires. Readiness probes are unauthenticated, so they must not turn into
 * one backend call each (KMS quota, DynamoDB reads). The window is measured
 * on a monotonic clock: a wall clock stepped back must not stretch a cached
 * success (a lying /readyz).
 */
export function cachedCheck(run: () => Promise<void>, okMs = 5_000, failMs = 2_000, clock: () => number = () => performance.now()): () => Promise<void> {
  let current: { until: number; result: Promise<void> } | undefined;
  return () => {
    if (!current || clock() >= current.until) {
      const result = run();
      const entry = { until: Infinity, result };
      current = entry;
      void result.then(
        () => (entry.until = clock() + okMs),
        () => (entry.until = clock() + failMs),
      );
    }
    return current.result;
  };
}
