import { createHash } from 'node:crypto';
import { IMAGE_PCRS, pcrsInclude, samePcrs, type PcrValues } from '../../lib/pcrs.js';
import type { Binding, Revocations } from './types.js';
import { INSTANCE_ID_BODY } from './schema.js';

/** module_id is `<instance id>-enc<hex>`. */
const MODULE_ID = new RegExp(`^(${INSTANCE_ID_BODY})-enc[0-9a-f]+$`);

/** What the policy needs to know about a verified enclave. */
export interface EnclaveIdentity {
  readonly moduleId: string;
  /** Every PCR the document carries. */
  readonly pcrs: PcrValues;
  readonly debug: boolean;
}

/**
 * Why a release was refused. The audit log records this exact reason; what
 * the caller is told is coarser (see `callerCode`), so that probing cannot
 * learn which secrets exist or what they are bound to.
 */
export type DenyReason =
  | 'UNKNOWN_SECRET'
  | 'SECRET_REVOKED'
  | 'PCR_MISMATCH'
  | 'DEBUG_NOT_ALLOWED'
  | 'INSTANCE_NOT_ALLOWED'
  /** Allowed but for an `ec2Tag` restriction whose tags could not be looked up (EC2 unreachable): fail closed. */
  | 'INSTANCE_TAGS_UNAVAILABLE'
  | 'BASELINE_NOT_APPROVED'
  | 'REVOKED'
  /** The binding file fails validation; the caller sees POLICY_DENIED like any other denial. */
  | 'STORE_INVALID'
  /** An inject binding asked for by `POST /v1/secrets`: its value is only ever added by the gateway, never released. */
  | 'INJECT_ONLY'
  /** A gateway token asked for a binding that is not an inject binding. */
  | 'NOT_INJECT';

export type Decision = { readonly allow: true; readonly rule: number } | { readonly allow: false; readonly reason: DenyReason; readonly detail: string };

/** The EC2 instance id the Nitro module id starts with ("i-...-enc..."). */
export function instanceIdOf(moduleId: string): string | undefined {
  return MODULE_ID.exec(moduleId)?.[1];
}

/**
 * The parent instance both signed facts name: the module id's instance, when PCR4 measures that same id;
 * otherwise undefined (the instance is unknown and no instance restriction can be met).
 */
export function attestedInstanceOf(identity: EnclaveIdentity): string | undefined {
  const instance = instanceIdOf(identity.moduleId);
  return instance !== undefined && identity.pcrs[4] === expectedPcr4(instance) ? instance : undefined;
}

/** The tags of the attested instance (key -> value), as EC2 reported them. */
export type InstanceTags = ReadonlyMap<string, string>;

/** PCR4 as Nitro extends it: SHA-384(48 zero bytes || instance id). */
export function expectedPcr4(instanceId: string): string {
  return createHash('sha384').update(new Uint8Array(48)).update(instanceId, 'utf8').digest('hex');
}

/** An IAM role ARN, as PCR3 measures it. */
export const IAM_ROLE_ARN = /^arn:aws[a-z-]*:iam::\d{12}:role\/[\w+=,.@/-]{1,512}$/;

/** PCR3 as Nitro extends it: SHA-384(48 zero bytes || IAM role ARN of the parent instance). */
export function expectedPcr3(roleArn: string): string {
  return createHash('sha384').update(new Uint8Array(48)).update(roleArn, 'utf8').digest('hex');
}

/**
 * Identity-wide revocation, independent of any secret: a revoked PCR0 or
 * instance gets nothing.
 */
export function checkRevoked(identity: EnclaveIdentity, revocations: Revocations): Decision | undefined {
  const pcr0 = identity.pcrs[0];
  if (pcr0 !== undefined && revocations.pcr0.includes(pcr0)) return { allow: false, reason: 'REVOKED', detail: 'PCR0 is revoked' };
  const instance = instanceIdOf(identity.moduleId);
  if (instance !== undefined && revocations.instances.includes(instance)) {
    return { allow: false, reason: 'REVOKED', detail: `instance ${instance} is revoked` };
  }
  return undefined;
}

/** The PCRs of `pcrs` a baseline records (the image's): what a rule naming a baseline must agree with it on. */
function imagePcrs(pcrs: PcrValues): PcrValues {
  return Object.fromEntries(IMAGE_PCRS.flatMap((i) => (pcrs[i] === undefined ? [] : [[i, pcrs[i]]])));
}

/** Baselines with enough valid approvals, name -> their recorded PCRs. */
export type ApprovedBaselines = ReadonlyMap<string, PcrValues>;

/**
 * Decides whether `identity` may read the secret bound by `binding`. Pure:
 * every input is an argument. A rule that names a baseline counts only while
 * that baseline is approved and still records exactly the rule's PCRs.
 * An `ec2Tag` restriction is checked last, against `tags` (the attested
 * instance's tags): without them an otherwise allowed request is refused
 * with INSTANCE_TAGS_UNAVAILABLE, so the caller looks tags up only for
 * requests nothing else refuses.
 */
export function decide(binding: Binding | undefined, identity: EnclaveIdentity, revocations: Revocations, approved: ApprovedBaselines = new Map(), tags?: InstanceTags): Decision {
  const revoked = checkRevoked(identity, revocations);
  if (revoked) return revoked;
  if (!binding) return { allow: false, reason: 'UNKNOWN_SECRET', detail: 'no binding for this secret' };
  if (binding.revoked) return { allow: false, reason: 'SECRET_REVOKED', detail: 'the secret is revoked' };
  if (identity.debug && !binding.allowDebug) return { allow: false, reason: 'DEBUG_NOT_ALLOWED', detail: 'debug enclaves are not allowed' };
  if (binding.instances) {
    // Both signed facts must agree: the module id names the instance and PCR4 measures it.
    const instance = attestedInstanceOf(identity);
    if (!instance || ('ids' in binding.instances && !binding.instances.ids.includes(instance))) {
      return { allow: false, reason: 'INSTANCE_NOT_ALLOWED', detail: `instance ${instanceIdOf(identity.moduleId) ?? 'unknown'} is not allowed` };
    }
  }
  let revokedMatch = false;
  let unapprovedMatch = false;
  for (let i = 0; i < binding.allow.length; i++) {
    const rule = binding.allow[i]!;
    if (!pcrsInclude(identity.pcrs, rule.pcrs)) continue;
    if (rule.baseline !== undefined) {
      if (revocations.baselines.includes(rule.baseline)) {
        revokedMatch = true;
        continue;
      }
      const recorded = approved.get(rule.baseline);
      // The baseline records the image (PCR0/1/2/8); PCR3 (IAM role) and PCR4 (instance) a rule may add are not the build's.
      if (!recorded || !samePcrs(recorded, imagePcrs(rule.pcrs))) {
        unapprovedMatch = true;
        continue;
      }
    }
    if (binding.instances && 'ec2Tag' in binding.instances) {
      const { key, value } = binding.instances.ec2Tag;
      if (!tags) return { allow: false, reason: 'INSTANCE_TAGS_UNAVAILABLE', detail: 'the instance tags are not known' };
      if (tags.get(key) !== value) return { allow: false, reason: 'INSTANCE_NOT_ALLOWED', detail: `instance ${attestedInstanceOf(identity)} lacks tag ${key}=${value}` };
    }
    return { allow: true, rule: i };
  }
  if (revokedMatch) return { allow: false, reason: 'REVOKED', detail: 'the matching baseline is revoked' };
  if (unapprovedMatch) return { allow: false, reason: 'BASELINE_NOT_APPROVED', detail: 'the matching baseline lacks the required approvals' };
  return { allow: false, reason: 'PCR_MISMATCH', detail: 'no allowed measurement set matches' };
}

/** The code a caller sees: only identity-wide revocation is distinguishable from "denied". */
export function callerCode(reason: DenyReason): 'POLICY_DENIED' | 'REVOKED' {
  return reason === 'REVOKED' ? 'REVOKED' : 'POLICY_DENIED';
}
