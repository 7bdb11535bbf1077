/**
 * The few object-store operations the audit archive needs, so export and
 * verification do not depend on the AWS SDK (loaded on demand, in
 * s3-archive.ts, only by commands that touch the archive).
 */

/** One archived object as read: its bytes and the Object Lock state of that version. */
export interface ArchivedObject {
  readonly body: Buffer;
  /** 'COMPLIANCE' for a segment written by export; undefined when the version has no retention. */
  readonly lockMode?: string;
  readonly retainUntil?: Date;
}

export interface ArchiveObjectStore {
  /** The bucket's name, for reports. */
  readonly bucket: string;
  /** Whether the bucket has Object Lock enabled. Throws ARCHIVE_NO_BUCKET when it does not exist. */
  objectLockEnabled(): Promise<boolean>;
  /** Every key under `prefix`, in S3's (lexicographic) order. */
  list(prefix: string): Promise<string[]>;
  /** The current version of `key`. */
  get(key: string): Promise<ArchivedObject>;
  /**
   * Writes `body` under `key` only if no object holds the key (If-None-Match: *),
   * locked in compliance mode until `retainUntil`. 'exists': something already
   * holds the key, and nothing was written.
   */
  putLocked(key: string, body: Buffer, retainUntil: Date): Promise<'written' | 'exists'>;
  close(): void;
}
