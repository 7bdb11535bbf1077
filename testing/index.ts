/**
 * `keygate/testing`: DEVELOPMENT ONLY. Lets an enclave application's own test
 * suite exercise `getSecret` from `keygate/agent` end to end without Nitro:
 * an NSM simulator signing attestation documents under a generated
 * development PKI, and an in-process broker that trusts that PKI.
 *
 * Nothing here is for production: documents are signed by keys generated on
 * the spot, and no production broker trusts their root. The module loads
 * only keygate's own runtime dependencies (no test runner).
 *
 * @packageDocumentation
 */
export { startTestKit } from './kit.js';
export type { TestKit, TestKitOptions, TestBindOptions, TestKitLogger } from './kit.js';
export { NsmSimulator, devPcrs } from '../vsock-shim/simulator/nsm-simulator.js';
export type { SimulatorOptions } from '../vsock-shim/simulator/nsm-simulator.js';
export { openDevPki } from '../vsock-shim/simulator/pki-store.js';
export type { TestPki, Issued } from '../vsock-shim/simulator/pki.js';
export type { PcrValues } from '../lib/pcrs.js';
