import type { DynamoDbTableSettings } from '../../lib/aws-settings.js';
import { CodedError } from '../../lib/coded-error.js';


/**
 * Where quarantine state lives: in this process (each replica counts and
 * quarantines on its own), or a DynamoDB table shared by every replica (an
 * identity quarantined on one is quarantined on all). The thresholds come from
 * `rateLimits` (quarantineAfterDenials, quarantineWindowSeconds, quarantineSeconds).
 */
/** (DynamoDB: `requestTimeoutMs` default 5 000, contention retries included.) */
export type QuarantineSettings = { readonly kind: 'memory' } | DynamoDbTableSettings;

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
