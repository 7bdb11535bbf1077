import { parseSegmentKey, type SegmentKey } from './keys.js';
import type { ArchivedKey } from './object-store.js';

/**
 * What the archive holds, read from the version listing (never from
 * ListObjectsV2, which a delete marker fools): each segment key with the
 * version export wrote, and what export never writes.
 */

export interface ListedSegment extends SegmentKey {
  /** The key's oldest version: the one export's conditional put wrote (a later version can only be someone else's). */
  readonly versionId: string;
  readonly lastModified?: Date;
}

/**
 * - delete-marker: a delete marker hides a key (its locked version survives, unseen by plain listings and reads)
 * - extra-version: a key holds more than one version (export writes each key once)
 * - foreign-object: a key export does not write
 */
export interface ListingProblem {
  readonly kind: 'delete-marker' | 'extra-version' | 'foreign-object';
  readonly chainId?: string;
  readonly key: string;
  readonly message: string;
}

export interface ArchiveListing {
  readonly segments: ListedSegment[];
  readonly problems: ListingProblem[];
}

export function readListing(prefix: string, keys: readonly ArchivedKey[]): ArchiveListing {
  const segments: ListedSegment[] = [];
  const problems: ListingProblem[] = [];
  for (const k of keys) {
    const segment = parseSegmentKey(prefix, k.key);
    const chain = segment ? { chainId: segment.chainId } : {};
    if (k.deleteMarkers > 0) {
      problems.push({ kind: 'delete-marker', ...chain, key: k.key, message: `${k.key} is hidden by ${k.deleteMarkers} delete marker(s) (a DeleteObject without a version id): plain listings and reads no longer see it` });
    }
    if (k.versions.length > 1) {
      problems.push({ kind: 'extra-version', ...chain, key: k.key, message: `${k.key} holds ${k.versions.length} versions: export writes each key once; the oldest is checked, the newer ones are someone else's` });
    }
    const original = k.versions[k.versions.length - 1];
    if (!original) continue; // only delete markers: reported above
    if (!segment) {
      problems.push({ kind: 'foreign-object', key: k.key, message: `${k.key} is not an archive segment (<chainId>/<firstSeq>-<lastSeq>.jsonl)` });
      continue;
    }
    segments.push({ ...segment, versionId: original.versionId, ...(original.lastModified ? { lastModified: original.lastModified } : {}) });
  }
  return { segments, problems };
}
