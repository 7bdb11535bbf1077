import type { ArchivedObject } from './object-store.js';

/**
 * Whether a segment version is protected as export protects it: compliance
 * mode, retained at least as long as export asked when it wrote that version.
 * Each version is judged against the retention in force when it was written
 * (the retain-until export stores in the object's metadata, in the same
 * request as the lock), never against today's configuration: raising
 * audit.archive.retentionDays, or a long export run, leaves no segment
 * "short". A version without that metadata (written by an older export, or
 * by anyone else) needs compliance retention of at least FLOOR_MS from when
 * S3 stored it. The metadata is the writer's word: export itself never
 * accepts someone else's object at a segment key with a retention shorter
 * than its own (export.ts putSegment). A retention that has run out is not tampering (the archive is
 * as written), only a fact to report: the version may now be deleted; it is
 * checked first, so an expired segment is never also called short.
 */

const DAY_MS = 86_400_000;
/** The least retention a segment written without the retain-until metadata must have had from when S3 stored it: one day. */
export const FLOOR_MS = DAY_MS;
/**
 * Export's clock sets retain-until, S3's clock sets LastModified; S3 refuses signed requests more than 15 minutes off the writer's clock, so a
 * retention this much shorter than the floor is not clock skew.
 */
export const SKEW_MS = 15 * 60_000;
/** S3 keeps retention dates to the second: a retain-until asked with milliseconds may come back rounded down. */
const ROUNDING_MS = 1000;

export type LockState = { readonly state: 'locked' } | { readonly state: 'expired' } | { readonly state: 'not-locked' | 'short-retention'; readonly why: string };

export function lockState(object: ArchivedObject, storedAt: Date | undefined, now: number): LockState {
  if (object.lockMode !== 'COMPLIANCE' || !object.retainUntil) {
    return { state: 'not-locked', why: object.lockMode ? `${object.lockMode} mode until ${object.retainUntil?.toISOString() ?? '?'}: not compliance` : 'no retention' };
  }
  const until = object.retainUntil.getTime();
  if (until <= now) return { state: 'expired' };
  const intended = object.intendedRetainUntil;
  if (intended) {
    if (until < intended.getTime() - ROUNDING_MS) {
      return { state: 'short-retention', why: `retained until ${object.retainUntil.toISOString()}, less than the ${intended.toISOString()} export asked for when it wrote it` };
    }
    return { state: 'locked' };
  }
  const stored = storedAt ?? object.lastModified;
  if (stored && until < stored.getTime() + FLOOR_MS - SKEW_MS) {
    return { state: 'short-retention', why: `retained until ${object.retainUntil.toISOString()}, stored ${stored.toISOString()}: less than the 1-day floor for segments written without their retain-until metadata` };
  }
  return { state: 'locked' };
}
