import type { AuditArchiveSettings } from '../settings.js';
import { ArchiveError } from './errors.js';
import type { ArchiveObjectStore } from './object-store.js';

/** The archive's object store on S3; the SDK is loaded here, on demand, so other commands never load it. */
export async function openArchiveStore(settings: AuditArchiveSettings): Promise<ArchiveObjectStore> {
  return new (await import('./s3-archive.js')).S3ArchiveStore(settings);
}

/** Refuses an archive bucket without Object Lock: segments there could be deleted, so the archive would promise nothing. */
export async function requireObjectLock(store: ArchiveObjectStore): Promise<void> {
  if (!(await store.objectLockEnabled())) {
    throw new ArchiveError('ARCHIVE_NO_OBJECT_LOCK', `bucket ${store.bucket} does not have Object Lock enabled: segments there could be deleted; use a bucket created with Object Lock (keygate store init creates one)`);
  }
}

/**
 * Creates the archive bucket with Object Lock enabled, idempotently (`keygate store init`), and checks an
 * existing one has it. Returns the lines to report.
 */
export async function initArchiveBucket(settings: AuditArchiveSettings): Promise<string[]> {
  const { S3ArchiveStore } = await import('./s3-archive.js');
  const store = new S3ArchiveStore(settings);
  try {
    const created = await store.createBucket();
    await requireObjectLock(store);
    return [`audit archive bucket ${settings.bucket}: ${created === 'created' ? 'created with Object Lock enabled' : 'exists, Object Lock enabled'} (segments retained ${settings.retentionDays} days in compliance mode)`];
  } finally {
    store.close();
  }
}
