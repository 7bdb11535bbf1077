import { AgentError } from './errors.js';

/** How `getSecret` waits for a secret that needs human approval. */
export interface GetSecretOptions {
  /**
   * How long to keep asking while the broker answers APPROVAL_PENDING (each ask is a fresh challenge and
   * attestation). Default 0: the first APPROVAL_PENDING fails the call at once.
   */
  readonly approvalTimeoutMs?: number;
  /** First wait between asks; doubled after each, up to `approvalMaxPollMs`. Default 1 000. */
  readonly approvalPollMs?: number;
  /** Longest wait between asks. Default 15 000. */
  readonly approvalMaxPollMs?: number;
}

/**
 * Runs `attempt` until it stops failing with APPROVAL_PENDING or `options.approvalTimeoutMs` has passed
 * (on the monotonic `clock`), with exponential backoff. Anything else (a value, APPROVAL_DENIED,
 * APPROVAL_EXPIRED, any other error) ends the wait at once.
 *
 * A pending answer (202) is unauthenticated: a relay can forge or replay it. It only ever makes this loop
 * wait and ask again; a value is accepted only from a signed, encrypted answer bound to the request that
 * carried it. So a forged 202 (or denial) is a denial of service, never a release.
 *
 * @throws AgentError APPROVAL_PENDING once the timeout has passed, or whatever `attempt` failed with
 */
export async function untilApproved<T>(attempt: () => Promise<T>, options: GetSecretOptions, clock: () => number, isClosed: () => boolean): Promise<T> {
  const timeoutMs = Math.max(0, options.approvalTimeoutMs ?? 0);
  const maxPollMs = Math.max(1, options.approvalMaxPollMs ?? 15_000);
  let pollMs = Math.max(1, Math.min(options.approvalPollMs ?? 1_000, maxPollMs));
  const deadline = clock() + timeoutMs;
  for (;;) {
    try {
      return await attempt();
    } catch (err) {
      if (!(err instanceof AgentError) || err.code !== 'APPROVAL_PENDING') throw err;
      const left = deadline - clock();
      if (left <= 0 || isClosed()) throw new AgentError('APPROVAL_PENDING', `human approval still pending after ${timeoutMs} ms (${err.message})`, { cause: err });
      await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, left)));
      pollMs = Math.min(pollMs * 2, maxPollMs);
    }
  }
}
