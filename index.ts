/**
 * keygate: attestation-gated secrets for AWS Nitro Enclaves.
 *
 * The package entry point exposes the pure verification core.
 */
export * from './broker/verify/index.js';
