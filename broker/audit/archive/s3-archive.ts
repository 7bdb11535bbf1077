import {
  CreateBucketCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  ListObjectVersionsCommand,
  PutObjectCommand,
  S3Client,
  type BucketLocationConstraint,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import type { AuditArchiveSettings } from '../settings.js';
import { ArchiveError } from './errors.js';
import type { ArchivedKey, ArchivedObject, ArchiveObjectStore } from './object-store.js';

/**
 * The archive on S3. Loaded on demand (open-archive.ts): it is the only
 * module that imports @aws-sdk/client-s3.
 */

interface AwsErrorShape {
  name?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

function awsError(err: unknown): AwsErrorShape {
  return typeof err === 'object' && err !== null ? (err as AwsErrorShape) : { message: String(err) };
}

function describe(err: unknown): string {
  const e = awsError(err);
  return `${e.name ?? e.Code ?? 'Error'}: ${e.message ?? ''}`.trim();
}

/** x-amz-meta-keygate-retain-until: the retain-until export asked for, ISO 8601. */
const RETAIN_UNTIL_META = 'keygate-retain-until';

function metaDate(meta: Record<string, string> | undefined): Date | undefined {
  const raw = meta?.[RETAIN_UNTIL_META];
  const t = raw === undefined ? NaN : Date.parse(raw);
  return Number.isFinite(t) ? new Date(t) : undefined;
}

export class S3ArchiveStore implements ArchiveObjectStore {
  readonly bucket: string;
  readonly #client: S3Client;
  readonly #timeoutMs: number;
  readonly #region: string | undefined;
  readonly #pageSize: number | undefined;

  /** `pageSize`: entries per ListObjectVersions page (tests of paging; default S3's 1000). */
  constructor(settings: AuditArchiveSettings, env: NodeJS.ProcessEnv = process.env, options: { pageSize?: number } = {}) {
    this.#pageSize = options.pageSize;
    this.bucket = settings.bucket;
    this.#timeoutMs = settings.requestTimeoutMs ?? 10_000;
    this.#region = settings.region ?? env.AWS_REGION;
    const endpoint = settings.endpoint ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
    const config: S3ClientConfig = {
      ...(settings.region ? { region: settings.region } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
      // A custom endpoint (a VPC endpoint, moto) is addressed by path: virtual-hosted names would need DNS for
      // `<bucket>.<endpoint host>`.
      ...(endpoint ? { forcePathStyle: true } : {}),
      maxAttempts: 3,
    };
    this.#client = new S3Client(config);
  }

  #deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.timeout(this.#timeoutMs) };
  }

  #unavailable(what: string, err: unknown): ArchiveError {
    return new ArchiveError('ARCHIVE_UNAVAILABLE', `S3 ${what} on bucket ${this.bucket} failed: ${describe(err)}`, { cause: err });
  }

  async objectLockEnabled(): Promise<boolean> {
    try {
      const out = await this.#client.send(new GetObjectLockConfigurationCommand({ Bucket: this.bucket }), this.#deadline());
      return out.ObjectLockConfiguration?.ObjectLockEnabled === 'Enabled';
    } catch (err) {
      const name = awsError(err).name;
      if (name === 'ObjectLockConfigurationNotFoundError') return false;
      if (name === 'NoSuchBucket') throw new ArchiveError('ARCHIVE_NO_BUCKET', `bucket ${this.bucket} does not exist (keygate store init creates it, with Object Lock)`, { cause: err });
      throw this.#unavailable('GetObjectLockConfiguration', err);
    }
  }

  async listVersions(prefix: string): Promise<ArchivedKey[]> {
    const byKey = new Map<string, { key: string; versions: Array<{ versionId: string; lastModified?: Date }>; deleteMarkers: number }>();
    const entry = (key: string): { key: string; versions: Array<{ versionId: string; lastModified?: Date }>; deleteMarkers: number } => {
      let e = byKey.get(key);
      if (!e) byKey.set(key, (e = { key, versions: [], deleteMarkers: 0 }));
      return e;
    };
    let keyMarker: string | undefined;
    let versionMarker: string | undefined;
    try {
      do {
        const out = await this.#client.send(
          new ListObjectVersionsCommand({ Bucket: this.bucket, Prefix: prefix, ...(this.#pageSize ? { MaxKeys: this.#pageSize } : {}), ...(keyMarker !== undefined ? { KeyMarker: keyMarker } : {}), ...(versionMarker !== undefined ? { VersionIdMarker: versionMarker } : {}) }),
          this.#deadline(),
        );
        // Versions come newest first within a key, across pages too (S3 and moto).
        for (const v of out.Versions ?? []) {
          if (v.Key !== undefined) entry(v.Key).versions.push({ versionId: v.VersionId ?? 'null', ...(v.LastModified ? { lastModified: v.LastModified } : {}) });
        }
        for (const m of out.DeleteMarkers ?? []) if (m.Key !== undefined) entry(m.Key).deleteMarkers++;
        keyMarker = out.IsTruncated ? out.NextKeyMarker : undefined;
        versionMarker = out.IsTruncated ? out.NextVersionIdMarker : undefined;
      } while (keyMarker !== undefined);
    } catch (err) {
      throw this.#unavailable(`ListObjectVersions ${prefix}`, err);
    }
    return [...byKey.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  async get(key: string, versionId?: string): Promise<ArchivedObject> {
    try {
      // ChecksumMode: the SDK checks the stored SHA-256 against the bytes received.
      const out = await this.#client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, ...(versionId ? { VersionId: versionId } : {}), ChecksumMode: 'ENABLED' }), this.#deadline());
      const body = Buffer.from(await out.Body!.transformToByteArray());
      // The lock headers of GetObject are the version's retention (AWS returns them to callers allowed
      // s3:GetObjectRetention): one request per segment instead of two.
      return {
        body,
        ...(out.ObjectLockMode ? { lockMode: out.ObjectLockMode } : {}),
        ...(out.ObjectLockRetainUntilDate ? { retainUntil: out.ObjectLockRetainUntilDate } : {}),
        ...(out.LastModified ? { lastModified: out.LastModified } : {}),
        ...(metaDate(out.Metadata) ? { intendedRetainUntil: metaDate(out.Metadata)! } : {}),
      };
    } catch (err) {
      throw this.#unavailable(`GetObject ${key}${versionId ? ` version ${versionId}` : ''}`, err);
    }
  }

  async putLocked(key: string, body: Buffer, retainUntil: Date): Promise<'written' | 'exists'> {
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: body,
          ContentType: 'application/x-ndjson',
          // Object Lock puts need an integrity checksum (Content-MD5 or x-amz-checksum-*).
          ChecksumAlgorithm: 'SHA256',
          ObjectLockMode: 'COMPLIANCE',
          ObjectLockRetainUntilDate: retainUntil,
          // What this version's retention is judged against later: the retention in force when it was written.
          Metadata: { [RETAIN_UNTIL_META]: retainUntil.toISOString() },
          // Never a new version over a segment: a concurrent or repeated export finds the key taken.
          IfNoneMatch: '*',
        }),
        this.#deadline(),
      );
      return 'written';
    } catch (err) {
      const e = awsError(err);
      if (e.name === 'PreconditionFailed' || e.$metadata?.httpStatusCode === 412) return 'exists';
      // 409 ConditionalRequestConflict: a concurrent write to the key is in flight; the caller re-reads it.
      if (e.name === 'ConditionalRequestConflict' || e.$metadata?.httpStatusCode === 409) return 'exists';
      throw this.#unavailable(`PutObject ${key}`, err);
    }
  }

  /**
   * Creates the bucket with Object Lock enabled; 'exists' when it already exists (then nothing is sent that
   * could change it: in us-east-1 a CreateBucket on an existing bucket of the account answers 200).
   */
  async createBucket(): Promise<'created' | 'exists'> {
    try {
      await this.objectLockEnabled();
      return 'exists';
    } catch (err) {
      if (!(err instanceof ArchiveError && err.code === 'ARCHIVE_NO_BUCKET')) throw err;
    }
    const location = this.#region && this.#region !== 'us-east-1' ? { CreateBucketConfiguration: { LocationConstraint: this.#region as BucketLocationConstraint } } : {};
    try {
      await this.#client.send(new CreateBucketCommand({ Bucket: this.bucket, ObjectLockEnabledForBucket: true, ...location }), this.#deadline());
      return 'created';
    } catch (err) {
      if (awsError(err).name === 'BucketAlreadyOwnedByYou') return 'exists'; // a concurrent init created it
      if (awsError(err).name === 'BucketAlreadyExists') throw new ArchiveError('ARCHIVE_UNAVAILABLE', `bucket ${this.bucket} belongs to another account: choose another name`, { cause: err });
      throw this.#unavailable('CreateBucket', err);
    }
  }

  close(): void {
    this.#client.destroy();
  }
}
