import type { PcrValues } from '../../lib/pcrs.js';

/** PCR indexes a binding may pin: 0, 1, 2 always; 3, 4 and 8 optionally. */
export const BINDABLE_PCRS = [0, 1, 2, 3, 4, 8] as const;
export const REQUIRED_PCRS = [0, 1, 2] as const;

/** The PCRs of one allowed measurement set (PCR0/1/2 present, one hex length: see parsePcrValues). */
export type BindablePcrs = PcrValues<(typeof BINDABLE_PCRS)[number]>;

/** One allowed measurement set. `baseline` names the recorded build the PCRs came from, if any. */
export interface AllowRule {
  readonly pcrs: BindablePcrs;
  readonly baseline?: string;
}

/** The key providers a binding may name: declared once (schema, registry and CLI derive from it). */
export const PROVIDER_NAMES = ['local', 'aws-kms'] as const;

/** Where a secret's ciphertext is decrypted. */
export type ProviderName = (typeof PROVIDER_NAMES)[number];

/**
 * How a value reaches the enclave: `jwe` (default; the broker decrypts and seals it to the enclave's key)
 * or `kms-recipient` (aws-kms only: KMS encrypts it to the enclave's key, the broker never sees it).
 */
export const RELEASE_MODES = ['jwe', 'kms-recipient'] as const;
export type ReleaseMode = (typeof RELEASE_MODES)[number];

/** A secret and the measurements allowed to read it (design.md section 3). */
export interface Binding {
  readonly secret: string;
  /** Increases by one on every rotation. */
  readonly version: number;
  readonly provider: ProviderName;
  /** KMS key id or ARN, for the aws-kms provider. */
  readonly kmsKeyId?: string;
  /** Absent: `jwe`. */
  readonly mode?: ReleaseMode;
  /** Base64 ciphertext of the value, as the provider produced it. */
  readonly ciphertext: string;
  /** The value is UTF-8 text (the agent returns a string) rather than bytes. */
  readonly text: boolean;
  readonly allow: readonly AllowRule[];
  /** Restrict to these EC2 instance ids, or to instances carrying a tag (checked against module_id and PCR4). */
  readonly instances?: InstanceRestriction;
  readonly allowDebug: boolean;
  readonly ttlSeconds: number;
  /** Credential substitution: never released; the broker adds it to calls to this upstream (broker/gateway). */
  readonly inject?: InjectRule;
  /** A revoked secret is released to nobody until rotated or re-bound. */
  readonly revoked: boolean;
  /** Human approval: each release request needs `required` grants from distinct `approvers` (broker/approval). */
  readonly approval?: ApprovalPolicy;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** An EC2 tag an instance must carry (exact key and value). */
export interface Ec2TagRule {
  readonly key: string;
  readonly value: string;
}

/** Which parent instances may read a secret: listed ids, or those tagged `ec2Tag` (looked up in EC2, cached). */
export type InstanceRestriction = { readonly ids: readonly string[] } | { readonly ec2Tag: Ec2TagRule };

/** Enclave identities refused for every secret. */
export interface Revocations {
  readonly pcr0: readonly string[];
  readonly instances: readonly string[];
  readonly baselines: readonly string[];
}

export const NO_REVOCATIONS: Revocations = { pcr0: [], instances: [], baselines: [] };

/** HTTP methods an inject route may allow. */
export const INJECT_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/**
 * How the broker uses an inject binding's value (design.md 5b): calls through the gateway to `upstream`
 * get header `header` set to `template` with `{value}` replaced; only `routes` ("METHOD /path", or
 * "METHOD /prefix*"), bodies up to `maxBodyBytes`, `budget.requests` calls per `budget.windowSeconds`
 * per enclave identity, and (when set) upstream answers with a status in `allowStatus`.
 */
export interface InjectRule {
  /** https origin only: `https://host[:port]`. */
  readonly upstream: string;
  /** Lower-case header name. */
  readonly header: string;
  /** Contains `{value}` exactly once. */
  readonly template: string;
  readonly routes: readonly string[];
  readonly maxBodyBytes: number;
  readonly budget: { readonly requests: number; readonly windowSeconds: number };
  readonly allowStatus?: readonly number[];
}

/** An approver's Ed25519 public key, stored in the binding: `kid` is its RFC 7638 thumbprint (SHA-256, base64url). */
export interface ApproverKey {
  readonly kid: string;
  readonly jwk: { readonly kty: 'OKP'; readonly crv: 'Ed25519'; readonly x: string };
}

/** k-of-n human approval of each release request (`keygate bind --approval K-of FILES --approval-window DUR`). */
export interface ApprovalPolicy {
  /** Grants from distinct approvers a request needs (k). */
  readonly required: number;
  /** The n keys whose grants count (distinct). */
  readonly approvers: readonly ApproverKey[];
  /** How long a request stays open from its creation: grants and the release must both fall inside it. */
  readonly windowSeconds: number;
}
