import { CodedError } from '../../../lib/coded-error.js';

/**
 * Why an archive operation refused (a whole run, or one chain of it):
 * - ARCHIVE_NO_BUCKET: the bucket does not exist (`keygate store init` creates it).
 * - ARCHIVE_NO_OBJECT_LOCK: the bucket has no Object Lock: segments there could be deleted, so nothing is exported.
 * - ARCHIVE_UNAVAILABLE: S3 failed or timed out; nothing was written by the failing call.
 * - ARCHIVE_CHAIN_BROKEN: the table's lines do not continue the archived chain (edited, dropped, reordered,
 *   or a bad seal): exporting them would launder the tampering into the archive; or the table no longer holds the
 *   archived head byte for byte (rolled back or rewritten after export).
 * - ARCHIVE_TAMPERED: the chain's archive holds what export never writes (a delete marker hiding a locked segment,
 *   a second version under a segment key, a segment not in compliance mode or retained too briefly): its archived
 *   head cannot be trusted, so nothing is exported for it until that is resolved (keygate audit verify-archive).
 * - ARCHIVE_CONFLICT: a different object already holds a segment's key (never overwritten).
 * - ARCHIVE_BAD_CHAIN_ID: a chain id that cannot be an S3 key component of this archive.
 */
export type ArchiveErrorCode = 'ARCHIVE_NO_BUCKET' | 'ARCHIVE_NO_OBJECT_LOCK' | 'ARCHIVE_UNAVAILABLE' | 'ARCHIVE_CHAIN_BROKEN' | 'ARCHIVE_CONFLICT' | 'ARCHIVE_BAD_CHAIN_ID' | 'ARCHIVE_TAMPERED';

export class ArchiveError extends CodedError<ArchiveErrorCode> {
  override readonly name = 'ArchiveError';
}
