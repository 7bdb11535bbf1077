import type { ArchivedObject } from './object-store.js';

/**
 * Whether a segment version is protected as export protects it: compliance
 * mode, retained at least the configured days from when S3 stored it. A
 * retention that has run out is not tampering (the archive is as written),
 * only a fact to report: the version may now be deleted.
 */

const DAY_MS = 86_400_000;
/**
 * The exporter's clock sets retain-until, S3's clock sets LastModified; S3 refuses signed requests more than
 * 15 minutes off, so a retention this much shorter than configured is not clock skew.
 */
const SKEW_MS = 15 * 60_000;

export type LockState = { readonly state: 'locked' } | { readonly state: 'expired' } | { readonly state: 'not-locked' | 'short-retention'; readonly why: string };

export function lockState(object: ArchivedObject, storedAt: Date | undefined, retentionDays: number, now: number): LockState {
  if (object.lockMode !== 'COMPLIANCE' || !object.retainUntil) {
    return { state: 'not-locked', why: object.lockMode ? `${object.lockMode} mode until ${object.retainUntil?.toISOString() ?? '?'}: not compliance` : 'no retention' };
  }
  const stored = storedAt ?? object.lastModified;
  if (stored && object.retainUntil.getTime() < stored.getTime() + retentionDays * DAY_MS - SKEW_MS) {
    return { state: 'short-retention', why: `retained until ${object.retainUntil.toISOString()}, stored ${stored.toISOString()}: less than the configured ${retentionDays} day(s) (if audit.archive.retentionDays was raised since, older segments show this)` };
  }
  return { state: object.retainUntil.getTime() <= now ? 'expired' : 'locked' };
}
