import { AttestationError, type AttestationErrorCode } from '../../index.js';

/** The code `fn` throws, or 'NO_ERROR'. Anything but an AttestationError propagates and fails the test. */
export function codeOf(fn: () => unknown): AttestationErrorCode | 'NO_ERROR' {
  try {
    fn();
    return 'NO_ERROR';
  } catch (err) {
    if (err instanceof AttestationError) return err.code;
    throw err;
  }
}
