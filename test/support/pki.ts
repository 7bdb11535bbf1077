// The AWS-shaped PKI lives with the NSM simulator; tests use the same code.
export * from '../../vsock-shim/simulator/pki.js';
