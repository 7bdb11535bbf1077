/** broker <-> enclave wire contract (claims, answer shapes, codes, challenge format). Imports nothing: the enclave agent may use it. */
export {
  RELEASE_JWS_TYPE,
  RELEASE_ISSUER,
  MAX_RELEASE_TTL_SECONDS,
  DEFAULT_MAX_CLOCK_SKEW_MS,
  buildReleaseClaims,
  buildRecipientReleaseClaims,
  checkReleaseClaims,
  VersionFloor,
} from './claims.js';
export type { ReleaseClaims, RecipientReleaseClaims, SignedReleaseClaims, ReleaseClaimsInput, AnswerProblemCode, AnswerProblem, ReleaseExpectation, ClaimsCheck } from './claims.js';
export { BROKER_ERROR_CODES, isBrokerErrorCode } from './codes.js';
export { receivedItems } from './answer.js';
export type { ReleasedSecret, SecretsAnswer, ChallengeAnswer, ErrorAnswer, ReceivedItem } from './answer.js';
export { CHALLENGE_NONCE_BYTES, CHALLENGE_TIME_BYTES, CHALLENGE_RANDOM_BYTES, CHALLENGE_MAC_BYTES } from './challenge.js';
export type { BrokerErrorCode } from './codes.js';
export { DELEGATION_JWS_TYPE, DELEGATION_VERSION, MAX_DELEGATION_DEPTH, MAX_DELEGATION_NAMES, SUMMARY_PCRS, parseDelegationClaims, isDelegationAudience } from './delegation.js';
export type { DelegationClaims, DelegationAudience, MeasurementValues, AttestationSummary, DelegationAnswer } from './delegation.js';
export {
  GATEWAY_CHALLENGE_PATH,
  GATEWAY_TOKEN_PATH,
  GATEWAY_CALL_PREFIX,
  GATEWAY_TOKEN_HEADER,
  CHANNEL_BINDING_HEADER,
  GATEWAY_ERROR_HEADER,
  CHANNEL_BINDING_LABEL,
  CHANNEL_BINDING_BYTES,
  CHANNEL_BINDING_CONTEXT,
  GATEWAY_TOKEN_TYPE,
  GATEWAY_TOKEN_AUDIENCE,
} from './gateway.js';
export type { GatewayTokenRequest, GatewayTokenAnswer } from './gateway.js';
export type { PendingApproval, ApprovalPendingAnswer } from './approval.js';
