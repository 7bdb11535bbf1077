/**
 * The few object-store operations the audit archive needs, so export and
 * verification do not depend on the AWS SDK (loaded on demand, in
 * s3-archive.ts, only by commands that touch the archive).
 */

/** One archived object version as read: its bytes and the Object Lock state of that version. */
export interface ArchivedObject {
  readonly body: Buffer;
  /** 'COMPLIANCE' for a segment written by export; undefined when the version has no retention. */
  readonly lockMode?: string;
  readonly retainUntil?: Date;
  /** When S3 stored the version (S3's clock, not the writer's). */
  readonly lastModified?: Date;
  /**
   * The retain-until export asked for when it wrote this version (object metadata, written in the same
   * request as the lock): what the version's retention is judged against. Undefined for objects written
   * without it (older exports, or anyone else).
   */
  readonly intendedRetainUntil?: Date;
}

/** One version of a key, as ListObjectVersions lists it. */
export interface ArchivedVersion {
  readonly versionId: string;
  readonly lastModified?: Date;
}

/**
 * Everything a key holds. Object Lock protects versions, not keys: a plain
 * DeleteObject adds a delete marker that hides a locked version from
 * ListObjectsV2 and GetObject, and an unconditional PutObject adds a version
 * over it; only the version listing shows both.
 */
export interface ArchivedKey {
  readonly key: string;
  /** Its versions, newest first (S3's order); the oldest is the one export wrote. */
  readonly versions: readonly ArchivedVersion[];
  /** How many delete markers the key has (export never writes one). */
  readonly deleteMarkers: number;
}

export interface ArchiveObjectStore {
  /** The bucket's name, for reports. */
  readonly bucket: string;
  /** Whether the bucket has Object Lock enabled. Throws ARCHIVE_NO_BUCKET when it does not exist. */
  objectLockEnabled(): Promise<boolean>;
  /** Every key under `prefix` with all its versions and delete markers, in key order. */
  listVersions(prefix: string): Promise<ArchivedKey[]>;
  /** A version of `key` (default: the current one, which a delete marker hides). */
  get(key: string, versionId?: string): Promise<ArchivedObject>;
  /**
   * Writes `body` under `key` only if no object holds the key (If-None-Match: *),
   * locked in compliance mode until `retainUntil` (also stored as the object's
   * metadata, read back as `intendedRetainUntil`). 'exists': something already
   * holds the key, and nothing was written.
   */
  putLocked(key: string, body: Buffer, retainUntil: Date): Promise<'written' | 'exists'>;
  close(): void;
}
