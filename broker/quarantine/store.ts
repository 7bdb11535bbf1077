import { CodedError } from '../../lib/coded-error.js';

/** Credentials given in code (tests, embedding); a config file relies on the AWS SDK's credential chain. */
export interface StaticAwsCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

/**
 * Where quarantine state lives: in this process (each replica counts and
 * quarantines on its own), or a DynamoDB table shared by every replica (an
 * identity quarantined on one is quarantined on all). The thresholds come from
 * `rateLimits` (quarantineAfterDenials, quarantineWindowSeconds, quarantineSeconds).
 */
export type QuarantineSettings =
  | { readonly kind: 'memory' }
  | {
      readonly kind: 'dynamodb';
      readonly table: string;
      /** Unset: the AWS SDK's usual configuration (AWS_REGION, profile). */
      readonly region?: string;
      /** Unset: the SDK's (AWS_ENDPOINT_URL, or DynamoDB's regional endpoint). */
      readonly endpoint?: string;
      /** Only from code, never from a config file. Unset: the SDK's credential chain. */
      readonly credentials?: StaticAwsCredentials;
      /** SDK attempts per call, throttling retries included. Default 3. */
      readonly maxAttempts?: number;
      /** Deadline of one check or one recorded denial in ms, SDK and contention retries included. Default 5 000. */
      readonly requestTimeoutMs?: number;
    };

/** The quarantine's thresholds, in milliseconds. */
export interface QuarantineLimits {
  /** Denials within `windowMs` that quarantine an identity; 0 disables quarantine. */
  readonly threshold: number;
  readonly windowMs: number;
  readonly quarantineMs: number;
}

/** The shared quarantine could not answer or record (throttled, unreachable, denied): the request is refused, nothing released. */
export class QuarantineUnavailableError extends CodedError<'QUARANTINE_UNAVAILABLE'> {
  override readonly name = 'QuarantineUnavailableError';
  /** The backend's own error name (ThrottlingException, TimeoutError, ...), for the audit and the operator. */
  readonly storeError: string;
  constructor(message: string, options: { cause?: unknown; storeError: string }) {
    super('QUARANTINE_UNAVAILABLE', message, options);
    this.storeError = options.storeError;
  }
}
