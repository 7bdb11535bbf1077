/**
 * Waiting for a condition without fixed sleeps: poll it, with a generous bound
 * (the suite must stay green on a loaded two-core machine).
 */

/** Polls `check` every 50 ms until it holds; throws "timed out waiting for `what`" after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
