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

export class AgentError extends Error {
  override readonly name = 'AgentError';
  constructor(
    readonly code: AgentErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
