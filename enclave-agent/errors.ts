import { CodedError } from '../vsock-shim/coded-error.js';

/**
 * Codes an agent call can fail with: the broker's own codes are passed
 * through unchanged (POLICY_DENIED, REVOKED, ...); the rest are the agent's.
 */
export type AgentErrorCode =
  | 'BROKER_UNREACHABLE'
  | 'BAD_RESPONSE'
  | 'UNTRUSTED_RESPONSE'
  | 'NSM_ERROR'
  | 'AGENT_CLOSED'
  | (string & {});

export class AgentError extends CodedError<AgentErrorCode> {
  override readonly name = 'AgentError';
}
