export { verifyAttestation, createVerifier } from './verify.js';
export type { VerifyOptions, VerifiedDocument, SigningCertificateInfo, TrustedRoot, Verifier, VerifierSettings, AsyncVerifier, ThreadPoolVerifierSettings } from './verify.js';
export type { AttestationPayload } from './payload.js';
export { AttestationError, ATTESTATION_ERROR_CODES, isAttestationError } from './errors.js';
export type { AttestationErrorCode } from './errors.js';
export { AWS_NITRO_ROOT_G1_PEM, AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_SHA256 } from './aws-root.js';
export { pemCertificates } from './pem.js';
