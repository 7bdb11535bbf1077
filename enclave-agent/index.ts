export { createAgent } from './agent.js';
export type { AgentOptions, AgentStats, SecretAgent, SecretValue } from './agent.js';
export { AgentError } from './errors.js';
export type { AgentErrorCode } from './errors.js';
