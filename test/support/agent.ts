/** Small helpers shared by the enclave-agent suites. */
import { expect } from 'vitest';
import { AgentError } from '../../enclave-agent/index.js';

/** The AgentError a call fails with (fails the test if it succeeds or throws anything else). */
export async function errorOf(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(AgentError);
    return err as AgentError;
  }
  throw new Error('expected the call to fail');
}

/** A monotonic clock the test moves by hand. */
export function manualClock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}
