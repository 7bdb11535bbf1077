import { CodedError } from '../../../lib/coded-error.js';

/**
 * Why an archive operation refused (a whole run, or one chain of it):
 * - ARCHIVE_NO_BUCKET: the bucket does not exist (`keygate store init` creates it).
 * - ARCHIVE_NO_OBJECT_LOCK: the bucket has no Object Lock: segments there could be deleted, so nothing is exported.
 * - ARCHIVE_UNAVAILABLE: S3 failed or timed out; nothing was written by the failing call.
 * - ARCHIVE_CHAIN_BROKEN: the table's lines do not continue the archived chain (edited, dropped, reordered,
 *   or a bad seal): exporting them would launder the tampering into the archive; or the table no longer holds the
 *   archived head byte for byte (rolled back or rewritten after export).
 * - ARCHIVE_TAMPERED: kept as a stable code, no longer raised by export: what the archive holds besides the
 *   segments that link (planted or unlocked objects, delete markers, extra versions, short retention) is reported
 *   as warnings of the chain and skipped (export.ts ArchiveWarning), since anyone with s3:PutObject could
 *   otherwise stop a chain forever: a locked object cannot be removed.
 * - ARCHIVE_CONFLICT: even the random-tagged key a segment falls back to is taken (never overwritten).
 * - ARCHIVE_BAD_CHAIN_ID: a chain id that cannot be an S3 key component of this archive.
 * - AUDIT_NO_KEY: no broker public key to check seals with (no --key, none in the configured shared keys): a
 *   problem of the environment, not of how the command was called (export may instead be told --no-signatures).
 */
export type ArchiveErrorCode = 'ARCHIVE_NO_BUCKET' | 'ARCHIVE_NO_OBJECT_LOCK' | 'ARCHIVE_UNAVAILABLE' | 'ARCHIVE_CHAIN_BROKEN' | 'ARCHIVE_CONFLICT' | 'ARCHIVE_BAD_CHAIN_ID' | 'ARCHIVE_TAMPERED' | 'AUDIT_NO_KEY';

export class ArchiveError extends CodedError<ArchiveErrorCode> {
  override readonly name = 'ArchiveError';
}
