export { createAgent } from './agent.js';
export type { AgentOptions, AgentStats, SecretAgent, SecretValue } from './agent.js';
export type { GetSecretOptions } from './approval.js';
export { AgentError } from './errors.js';
export type { DelegateOptions, Delegation, DelegationParent } from './delegation.js';
export type { GatewayOptions } from './gateway-client.js';
export type { GatewayHandle } from './gateway.js';
export type { AgentErrorCode } from './errors.js';
// What an enclave application wires together in production: /dev/nsm and vsock through the parent's forwarder.
export { openNsmDevice, connectVsock, listenVsock, PARENT_CID, NativeAddonMissingError } from '../vsock-shim/vsock.js';
export { parseTransport, tcpTransport, unixTransport, vsockTransport } from '../vsock-shim/transport/transport.js';
export type { Transport } from '../vsock-shim/transport/transport.js';
export { tunnelTransport } from '../vsock-shim/transport/tunnel.js';
export type { Nsm } from '../vsock-shim/nsm/client.js';
