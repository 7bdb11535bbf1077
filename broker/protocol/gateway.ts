/**
 * The credential gateway's wire contract (design.md 5b), shared by the broker (broker/gateway) and the agent
 * (enclave-agent/gateway*.ts). Imports nothing.
 *
 * The agent speaks TLS 1.3 to the broker's gateway listener, whose certificate key it pins (SPKI SHA-256,
 * from its measured image), over the same byte transport it uses for the broker. It obtains a gateway token
 * with a fresh attestation (challenge, then the document, whose `public_key` is the gateway's RSA-2048 key);
 * the token names that key (`cnf.jwk`, RFC 7800). On each connection it signs the connection's TLS exporter
 * (RFC 9266 label) with that key and sends the signature with every call: a token is usable only on a
 * connection whose other end holds the attested key.
 */
export const GATEWAY_CHALLENGE_PATH = '/v1/gateway/challenge';
export const GATEWAY_TOKEN_PATH = '/v1/gateway/token';
/** Calls go to `${GATEWAY_CALL_PREFIX}<credential name><upstream path and query>`. */
export const GATEWAY_CALL_PREFIX = '/v1/gateway/call/';

export const GATEWAY_TOKEN_HEADER = 'keygate-gateway-token';
/** base64url RSA-PSS (SHA-256, salt 32) signature of CHANNEL_BINDING_CONTEXT || the connection's exporter. */
export const CHANNEL_BINDING_HEADER = 'keygate-channel-binding';
/** Set on every answer the gateway itself writes (a refusal): its error code. Upstream answers never carry it. */
export const GATEWAY_ERROR_HEADER = 'keygate-gateway-error';

/** RFC 9266 (tls-exporter channel binding): the exporter label and length; no context. */
export const CHANNEL_BINDING_LABEL = 'EXPORTER-Channel-Binding';
export const CHANNEL_BINDING_BYTES = 32;
/** Domain separation for what the attested key signs: it never signs a bare exporter value. */
export const CHANNEL_BINDING_CONTEXT = 'keygate gateway channel binding v1\u0000';

/** The gateway token's JWS `typ`. */
export const GATEWAY_TOKEN_TYPE = 'keygate-gateway+jwt';
export const GATEWAY_TOKEN_AUDIENCE = 'keygate-gateway';

/** `POST /v1/gateway/token` body: the attestation document (base64) and the credential. */
export interface GatewayTokenRequest {
  readonly attestation: string;
  readonly name: string;
}

/** `POST /v1/gateway/token` answer. */
export interface GatewayTokenAnswer {
  readonly token: string;
  readonly name: string;
  /** Seconds the token is valid from its issue (at most the binding's ttlSeconds). */
  readonly ttlSeconds: number;
}
