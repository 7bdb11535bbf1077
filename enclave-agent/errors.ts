import { CodedError } from '../lib/coded-error.js';
import type { BrokerErrorCode } from '../broker/protocol/index.js';

/**
 * Codes an agent call can fail with: the broker's own codes are passed
 * through unchanged (POLICY_DENIED, REVOKED, ...: only those on the broker's
 * list, see broker/protocol/codes.ts); the rest are the agent's. A closed
 * list: a code that is on neither cannot be raised.
 */
export type AgentErrorCode =
  | 'BROKER_UNREACHABLE'
  | 'BAD_RESPONSE'
  /** Not the pinned broker's answer to the document this agent sent for this request (replayed, redirected, forged). */
  | 'UNTRUSTED_RESPONSE'
  /** Bound to this request but outside its time window on the enclave's clock (iat/exp): the clocks disagree. */
  | 'STALE_RESPONSE'
  /** Older than a version of the secret this process already accepted. */
  | 'VERSION_ROLLBACK'
  | 'NSM_ERROR'
  /** Mode kms-recipient: KMS's recipient ciphertext is not the structure KMS produces, or uses other algorithms (enclave-agent/cms.ts). */
  | 'CMS_MALFORMED'
  | 'CMS_UNSUPPORTED'
  /** Mode kms-recipient: the recipient ciphertext is encrypted to another key than this enclave's. */
  | 'CMS_WRONG_RECIPIENT'
  | 'CMS_DECRYPT_FAILED'
  | 'AGENT_CLOSED'
  /** `parentOf(token, expected)`: the delegating parent's measurements are not the expected ones. */
  | 'PARENT_MISMATCH'
  /** Credential gateway: TLS with the gateway failed (handshake or record integrity): the relay altered or replayed bytes. */
  | 'GATEWAY_TLS_FAILED'
  /** Credential gateway: the peer's certificate key is not the pinned gateway key. */
  | 'GATEWAY_UNTRUSTED'
  /** Credential gateway: `gateway` options were not given to createAgent. */
  | 'GATEWAY_NOT_CONFIGURED'
  | BrokerErrorCode;

export class AgentError extends CodedError<AgentErrorCode> {
  override readonly name = 'AgentError';
}
