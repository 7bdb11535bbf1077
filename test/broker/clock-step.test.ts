/**
 * The broker reads the wall clock: an NTP step backwards must not lock
 * clients out (or stretch a quarantine) for the size of the step.
 */
import { describe, expect, it } from 'vitest';
import { Quarantine, RateLimiter } from '../../broker/rate-limit.js';

const HOUR = 3_600_000;

describe('a wall clock stepped backwards', () => {
  it('does not drain a token bucket: a client is served again after its normal refill time', () => {
    const limiter = new RateLimiter(10, 10);
    const t = 1_000_000_000;
    for (let i = 0; i < 10; i++) expect(limiter.take('client', t)).toBe(true);
    expect(limiter.take('client', t)).toBe(false);
    // The clock steps back an hour. The bucket (still empty) counts its refill from the first request
    // after the step, so one second later it is full again (before the fix: refused for an hour).
    const back = t - HOUR;
    expect(limiter.take('client', back)).toBe(false);
    expect(limiter.take('client', back + 1_000)).toBe(true);
    for (let i = 0; i < 9; i++) expect(limiter.take('client', back + 1_000)).toBe(true);
    expect(limiter.take('client', back + 1_000)).toBe(false);
  });

  it('does not stretch a quarantine beyond its configured length', () => {
    const q = new Quarantine(2, 60_000, 300_000);
    const t = 1_000_000_000;
    q.recordDenial('id', t);
    q.recordDenial('id', t);
    expect(q.isQuarantined('id', t + 1_000)).toBe(true);
    const back = t - HOUR;
    expect(q.isQuarantined('id', back)).toBe(true); // still quarantined, for at most its length from now
    expect(q.isQuarantined('id', back + 300_001)).toBe(false);
  });
});
