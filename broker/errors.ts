import { CodedError } from '../lib/coded-error.js';
import type { BrokerErrorCode } from './protocol/index.js';

/**
 * Every code the broker API can answer with: the list lives in the wire
 * contract (broker/protocol); release.ts passes verification codes through,
 * so the compiler checks they are all on it.
 */
export type { BrokerErrorCode };

/**
 * An error answered to the caller as `{ error: { code, message } }`; the
 * message must carry no internal detail. The HTTP status is the transport's
 * business: broker/http-status.ts maps the code to it where the answer is written.
 */
export class BrokerError extends CodedError<BrokerErrorCode> {
  override readonly name = 'BrokerError';
}
