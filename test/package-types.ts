// Compiled by `npm run typecheck` (never run): proves the exports map carries
// types, so `import ... from 'keygate'` type-checks for consumers.
import { verifyAttestation, type AttestationErrorCode, type VerifiedDocument, type VerifyOptions } from 'keygate';

const options: VerifyOptions = { at: new Date(0), maxAgeMs: 300_000, pcrs: { 0: 'ab' }, allowDebug: false };
export const check: (bytes: Uint8Array) => VerifiedDocument = (bytes) => verifyAttestation(bytes, options);
export const code: AttestationErrorCode = 'PCR_MISMATCH';

// keygate/testing: the kit's types through the exports map, as an application's test suite sees them.
import { devPcrs, startTestKit, type TestBindOptions, type TestKit, type TestKitOptions } from 'keygate/testing';
import type { SecretAgent } from 'keygate/agent';

const kitOptions: TestKitOptions = { pcrs: { 0: devPcrs()[0] }, warn: () => {}, log: (level, message, fields) => void [level, message, fields] };
const bindOptions: TestBindOptions = { pcrs: devPcrs(), ttlSeconds: 30 };
export const useKit = async (): Promise<SecretAgent> => {
  const kit: TestKit = await startTestKit(kitOptions);
  await kit.bind('db', new Uint8Array([1]), bindOptions);
  return kit.agent({ timeoutMs: 1000 });
};
