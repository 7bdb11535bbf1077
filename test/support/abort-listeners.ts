/**
 * Counts the 'abort' listeners added to any AbortSignal in this process while `fn` runs: a fetch Request
 * adds one per request, so a route that builds none adds none (issue 15: no per-request Request, stream or
 * signal on GET floods and POST bodies).
 */
export async function countAbortListeners(fn: () => Promise<void>): Promise<number> {
  const original = EventTarget.prototype.addEventListener;
  let count = 0;
  EventTarget.prototype.addEventListener = function (this: EventTarget, type: string, ...rest: unknown[]) {
    if (type === 'abort' && this instanceof AbortSignal) count++;
    return (original as (...args: unknown[]) => void).call(this, type, ...rest);
  } as typeof original;
  try {
    await fn();
  } finally {
    EventTarget.prototype.addEventListener = original;
  }
  return count;
}
