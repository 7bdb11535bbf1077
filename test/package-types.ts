// Compiled by `npm run typecheck` (never run): proves the exports map carries
// types, so `import ... from 'keygate'` type-checks for consumers.
import { verifyAttestation, type AttestationErrorCode, type VerifiedDocument, type VerifyOptions } from 'keygate';

const options: VerifyOptions = { at: new Date(0), maxAgeMs: 300_000, pcrs: { 0: 'ab' }, allowDebug: false };
export const check: (bytes: Uint8Array) => VerifiedDocument = (bytes) => verifyAttestation(bytes, options);
export const code: AttestationErrorCode = 'PCR_MISMATCH';
