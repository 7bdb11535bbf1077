/** broker <-> enclave wire contract (claims, answers, codes). Imports nothing: the enclave agent may use it. */
export {
  RELEASE_JWS_TYPE,
  RELEASE_ISSUER,
  MAX_RELEASE_TTL_SECONDS,
  DEFAULT_MAX_CLOCK_SKEW_MS,
  buildReleaseClaims,
  checkReleaseClaims,
  VersionFloor,
} from './claims.js';
export type { ReleaseClaims, ReleaseClaimsInput, AnswerProblemCode, AnswerProblem, ReleaseExpectation, ClaimsCheck } from './claims.js';
export { BROKER_ERROR_CODES, isBrokerErrorCode } from './codes.js';
export type { BrokerErrorCode } from './codes.js';
