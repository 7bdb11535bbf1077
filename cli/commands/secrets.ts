import type { ParseArgsConfig } from 'node:util';
import { AdminError, bindSecret, MAX_SECRET_BYTES, pcrSet, revokeIdentities, revokeSecret, rotateSecret, unbindSecret } from '../../broker/admin.js';
import { SchemaError } from '../../broker/policy/schema.js';
import { LocalProviderRefusedError } from '../../broker/kms/refused-local.js';
import { KmsUnavailableError, SecretUnavailableError } from '../../broker/kms/provider.js';
import type { ProviderName } from '../../broker/policy/types.js';
import type { PcrValues } from '../../lib/pcrs.js';
import { OperationError } from '../../broker/ops/errors.js';
import { addRule, baselineSource, resolveRule, rolePcrs, warnUnapproved, type BaselineSource } from './bind-baseline.js';
import { approvalPolicyFromFlags } from './approvals.js';
import { coded } from '../store-ops.js';
import { UsageError } from '../errors.js';
import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, storeWhere, withAdmin, type StoreFlags } from '../context.js';
import { devBindPcrs } from './dev.js';
import { InputTooLargeError, readInput } from '../input.js';
import { parseDuration } from '../parse.js';
import type { CliIo } from '../io.js';
import { ADMIN_CLIENT_OPTIONS, ADMIN_CLIENT_USAGE, adminCall, type AdminClientFlags } from '../admin-client.js';
import { bindThroughAdmin, type RuleFlags } from './bind-admin.js';
import { INJECT_OPTIONS, INJECT_USAGE, injectFromFlags } from './bind-inject.js';

export const BIND_USAGE = `Usage: keygate bind <secret> (--pcr0 H --pcr1 H --pcr2 H [--pcr3 H] [--pcr4 H] [--pcr8 H] | --baseline NAME)
                    (--value-file F | --value-stdin) [options]
       keygate bind <secret> --baseline NAME [--iam-role ARN | --pcr3 H] [--pcr4 H] [store options]

Binds a secret to the measurements allowed to read it. The value is read from
a file or standard input (exact bytes), never from the command line.

Without a value, \`--baseline\` adds a measurement set to an existing binding
and changes nothing else: the value and its version stay (versions count
values; agents keep their cached value), only the allowed measurements grow.

  --baseline NAME    take PCRs from a recorded baseline (pcr-baselines/NAME.json
                     or a path, copied into the store with its approvals; else the
                     baseline stored as NAME), or nitro-cli JSON output; usable once
                     approved: warns when brokers would deny it (BASELINE_NOT_APPROVED)
  --baselines DIR    where baselines live (default ./pcr-baselines)
  --iam-role ARN     also require the parent instance's IAM role (PCR3 = SHA-384 of
                     48 zero bytes and the ARN); with --baseline or --pcr0/1/2
  --add              add this measurement set to the existing ones (rolling deploy)
  --provider P       local (default) or aws-kms
  --kms-key-id ID    KMS key for --provider aws-kms
  --recipient        with aws-kms: KMS encrypts the value to the enclave's attested
                     key (Decrypt with Recipient); the broker never sees it. Kept
                     when the secret is bound again on aws-kms (unbind to drop it)
  --ttl DUR          how long enclaves may cache the value (default 60s)
  --instance ID      only this EC2 instance (repeatable; checked against module_id and PCR4)
  --instance-tag K=V only EC2 instances tagged K=V (the broker asks EC2 DescribeTags for the
                     instance module_id and PCR4 name, caches the answer for ec2.tagCacheSeconds)
  --allow-debug      also release to debug-mode enclaves (never in production)
  --approval K-of FILE,FILE,...
                     human approval: each release request needs grants from K of these
                     approvers' Ed25519 public keys (JWK or PEM); see keygate approvals --help.
                     Kept on a re-bind that does not give it (unbind to drop it)
  --approval-window DUR
                     how long a request may wait for its grants and its release (1m..7d; default 15m)
  --dev-pcrs         with --dev: bind to the NSM simulator's PCR0/1/2 (keygate dev pcrs)
${INJECT_USAGE}${STORE_USAGE}
${ADMIN_CLIENT_USAGE}
`;

export const ROTATE_USAGE = `Usage: keygate rotate <secret> (--value-file F | --value-stdin) [store options]

Stores a new value (version + 1); the next request of any enclave gets it.
${STORE_USAGE}
${ADMIN_CLIENT_USAGE}
`;

export const UNBIND_USAGE = `Usage: keygate unbind <secret> [store options]
${STORE_USAGE}
${ADMIN_CLIENT_USAGE}
`;

export const REVOKE_USAGE = `Usage: keygate revoke <secret> | --pcr0 H | --instance i-... | --baseline NAME | --delegation ID [store options]

Revokes a secret (released to nobody until rotated), or an enclave identity
for every secret (and every delegation it issued), or one delegation and those
derived from it. Takes effect on the next request of every broker replica.
Undo with keygate unrevoke (same arguments).
${STORE_USAGE}
${ADMIN_CLIENT_USAGE}
`;

function parse(argv: readonly string[], options: NonNullable<ParseArgsConfig['options']>): { values: Record<string, unknown>; positionals: string[] } {
  return parseCommand(argv, { ...options, ...STORE_OPTIONS, ...ADMIN_CLIENT_OPTIONS }, Infinity);
}

function oneSecret(positionals: string[], usage: string): string {
  if (positionals.length !== 1) throw new UsageError(`expected exactly one secret name\n\n${usage}`);
  return positionals[0]!;
}

async function readValue(values: Record<string, unknown>, io: CliIo): Promise<Uint8Array> {
  const file = values['value-file'] as string | undefined;
  const stdin = values['value-stdin'] as boolean | undefined;
  if (Boolean(file) === Boolean(stdin)) throw new UsageError('give exactly one of --value-file F or --value-stdin');
  const value = await readInput(file ?? '-', io, MAX_SECRET_BYTES, file ? '--value-file' : undefined).catch((err: unknown) => {
    throw err instanceof InputTooLargeError ? new UsageError(`the secret value is larger than ${MAX_SECRET_BYTES / 1024} KiB`) : err;
  });
  if (value.length === 0) throw new UsageError('the secret value is empty');
  return value;
}

function translate(err: unknown, kmsKeyId?: string): never {
  if (err instanceof OperationError) throw coded(err);
  if (err instanceof AdminError || err instanceof SchemaError) throw new UsageError(err.message, { hint: err instanceof SchemaError });
  if (err instanceof LocalProviderRefusedError) throw new UsageError(`${err.code}: ${err.message}`, { hint: false });
  if (err instanceof KmsUnavailableError || err instanceof SecretUnavailableError) {
    // The AWS error name is in the message; its text (e.g. which principal was denied) is on the cause.
    const aws = err.cause instanceof Error && err.cause.message ? `: ${err.cause.message}` : '';
    throw new UsageError(`${err.code}: ${err.message}${kmsKeyId ? ` (key ${kmsKeyId})` : ''}${aws}`, { hint: false });
  }
  throw err;
}

/** A PCR as --pcrN takes it: SHA-384 hex (96 characters; 64 or 128 for other hash banks), optional 0x. */
const PCR_FLAG = /^(?:0x)?(?:[0-9a-fA-F]{96}|[0-9a-fA-F]{64}|[0-9a-fA-F]{128})$/;

/** Checks --pcrN values in the flags' words (the schema would say `pcrs.0: has an invalid format`). */
function checkPcrFlags(pcrs: PcrValues, required: readonly number[]): void {
  for (const [index, value] of Object.entries(pcrs)) {
    if (value !== undefined && !PCR_FLAG.test(value)) throw new UsageError(`--pcr${index}: expected 96 hex characters (a SHA-384 measurement), got "${value}"`);
  }
  for (const index of required) {
    if (pcrs[index] === undefined) throw new UsageError(`--pcr${index} is missing: give --pcr0, --pcr1 and --pcr2 (96 hex characters each)`);
  }
}

/** `--instance-tag KEY=VALUE`: the first "=" splits (a value may contain "="); the schema checks the lengths. */
function parseInstanceTag(flag: string): { key: string; value: string } {
  const at = flag.indexOf('=');
  if (at <= 0) throw new UsageError(`--instance-tag: expected KEY=VALUE (an EC2 tag), got "${flag}"`);
  return { key: flag.slice(0, at), value: flag.slice(at + 1) };
}

/** The rule as the flags give it, for the admin API (which resolves and checks it as the store path does). */
function ruleFlags(values: Record<string, unknown>, pcrs: PcrValues, source: BaselineSource | undefined): RuleFlags {
  const image = Object.fromEntries(Object.entries(pcrs).filter(([k, v]) => k !== '3' && k !== '4' && v !== undefined)) as PcrValues;
  return {
    image,
    ...(source ? { source } : {}),
    ...(values['iam-role'] !== undefined ? { iamRole: values['iam-role'] as string } : values.pcr3 !== undefined ? { pcr3: values.pcr3 as string } : {}),
    ...(values.pcr4 !== undefined ? { pcr4: values.pcr4 as string } : {}),
  };
}

/** `keygate bind` */
export async function bindCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {
    pcr0: { type: 'string' }, pcr1: { type: 'string' }, pcr2: { type: 'string' }, pcr3: { type: 'string' }, pcr4: { type: 'string' }, pcr8: { type: 'string' },
    baseline: { type: 'string' }, baselines: { type: 'string' }, add: { type: 'boolean' }, 'value-file': { type: 'string' }, 'value-stdin': { type: 'boolean' },
    provider: { type: 'string' }, 'kms-key-id': { type: 'string' }, ttl: { type: 'string' }, instance: { type: 'string', multiple: true }, 'allow-debug': { type: 'boolean' },
    'instance-tag': { type: 'string' },
    recipient: { type: 'boolean' },
    'dev-pcrs': { type: 'boolean' },
    'iam-role': { type: 'string' },
    ...INJECT_OPTIONS,
    approval: { type: 'string' }, 'approval-window': { type: 'string' },
  });
  if (values.help) {
    io.out(BIND_USAGE);
    return 0;
  }
  const secret = oneSecret(positionals, BIND_USAGE);
  const extra = rolePcrs(values as { 'iam-role'?: string; pcr3?: string; pcr4?: string });
  let pcrFlags = { 0: values.pcr0, 1: values.pcr1, 2: values.pcr2, ...extra, 8: values.pcr8 } as PcrValues;
  if (values['dev-pcrs']) {
    if (!values.dev) throw new UsageError('--dev-pcrs binds to the NSM simulator\'s measurements: it needs --dev');
    if (Object.values(pcrFlags).some((v) => v !== undefined) || values.baseline) throw new UsageError('--dev-pcrs takes the place of --pcrN and --baseline');
    pcrFlags = devBindPcrs();
  }
  // A build's PCRs come from the baseline; the IAM role (PCR3) and instance (PCR4) may be added to them.
  const imagePcr = [pcrFlags[0], pcrFlags[1], pcrFlags[2], pcrFlags[8]].some((v) => v !== undefined);
  if (values.baseline ? imagePcr : !imagePcr) throw new UsageError('give either --pcr0/--pcr1/--pcr2 (and optionally 3, 4, 8) or --baseline NAME (optionally with --iam-role ARN or --pcr3, and --pcr4)');
  if (!values.baseline) checkPcrFlags(pcrFlags, [0, 1, 2]);
  if (values.baseline && !values['value-file'] && !values['value-stdin']) {
    // No value: a rule added to the existing binding, nothing else (its value, version and settings stay).
    const settings = ['provider', 'kms-key-id', 'ttl', 'instance', 'instance-tag', 'allow-debug', 'recipient', 'inject', 'approval', 'approval-window'].filter((k) => values[k] !== undefined);
    if (settings.length) throw new UsageError(`--${settings.join(', --')} change a binding's settings: give the value too (--value-file F or --value-stdin)`);
    const source = await baselineSource(values.baseline as string, values.baselines as string | undefined);
    if (values['broker-admin']) return bindThroughAdmin(io, values as AdminClientFlags, secret, ruleFlags(values, pcrFlags, source));
    return withAdmin(values as StoreFlags, ({ config, store }) => addRule(io, config, store, secret, source, extra)).catch((err: unknown) => {
      throw coded(err);
    });
  }
  const provider = (values.provider ?? 'local') as string;
  if (provider !== 'local' && provider !== 'aws-kms') throw new UsageError('--provider must be local or aws-kms');
  if (values.recipient && provider !== 'aws-kms') throw new UsageError('--recipient needs --provider aws-kms (only KMS can encrypt to an attested enclave key)');
  const ttlSeconds = values.ttl === undefined ? undefined : Math.round(parseDuration(values.ttl as string, '--ttl') / 1000);
  const instanceTag = values['instance-tag'] === undefined ? undefined : parseInstanceTag(values['instance-tag'] as string);
  if (instanceTag && values.instance) throw new UsageError('give --instance ID... or --instance-tag KEY=VALUE, not both');
  const inject = injectFromFlags(values);
  if (inject && values.recipient) throw new UsageError('--inject cannot be combined with --recipient: the broker must hold the value to add it to calls');
  const approval = await approvalPolicyFromFlags(values.approval as string | undefined, values['approval-window'] as string | undefined);
  if (values['broker-admin']) {
    if (approval) throw new UsageError('--broker-admin does not take --approval yet: bind through the store (--config) for a secret that needs human approval');
    if (inject) throw new UsageError('--broker-admin does not take --inject yet: bind an inject binding through the store (--config)');
    const source = values.baseline ? await baselineSource(values.baseline as string, values.baselines as string | undefined) : undefined;
    return bindThroughAdmin(io, values as AdminClientFlags, secret, ruleFlags(values, pcrFlags, source), {
      value: await readValue(values, io),
      provider,
      ...(values['kms-key-id'] ? { kmsKeyId: values['kms-key-id'] as string } : {}),
      recipient: Boolean(values.recipient),
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
      allowDebug: Boolean(values['allow-debug']),
      instances: (values.instance as string[] | undefined) ?? [],
      ...(instanceTag ? { instanceTag } : {}),
      add: Boolean(values.add),
    });
  }
  try {
    const source = values.baseline ? await baselineSource(values.baseline as string, values.baselines as string | undefined) : { rule: pcrSet(pcrFlags) };
    const value = await readValue(values, io);
    let replaced: number | undefined;
    let where = '';
    const binding = await withAdmin(values as StoreFlags, async ({ config, store, providers }) => {
      where = storeWhere(config);
      if (!values.add) replaced = store.snapshot().bindings.get(secret)?.allow.length;
      const { rule, baseline } = resolveRule(source, store.snapshot(), extra);
      const bound = await bindSecret(store, providers.get(provider as ProviderName)!, {
      secret,
      value,
      allow: [rule],
      provider: provider as ProviderName,
      ...(values['kms-key-id'] ? { kmsKeyId: values['kms-key-id'] as string } : {}),
      ...(values.recipient ? { mode: 'kms-recipient' as const } : {}),
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
      allowDebug: Boolean(values['allow-debug']),
      instances: (values.instance as string[] | undefined) ?? [],
      ...(instanceTag ? { instanceTag } : {}),
      addAllow: Boolean(values.add),
      ...(baseline ? { baselines: [baseline] } : {}),
      ...(inject ? { inject } : {}),
      ...(approval ? { approval } : {}),
      });
      await warnUnapproved(io, config, store, rule.baseline);
      return bound;
    });
    value.fill(0);
    io.out(`bound ${binding.secret} version ${binding.version} (${binding.allow.length} allowed measurement set${binding.allow.length === 1 ? '' : 's'}, ttl ${binding.ttlSeconds}s, ${binding.provider}${binding.mode === 'kms-recipient' ? ', kms-recipient' : ''}${binding.inject ? `, inject into ${binding.inject.upstream}` : ''}${binding.approval ? `, approval ${binding.approval.required} of ${binding.approval.approvers.length} within ${binding.approval.windowSeconds}s` : ''})\n`);
    if (replaced !== undefined) io.out(`replaced the ${replaced} measurement set${replaced === 1 ? '' : 's'} ${binding.secret} was bound to before (--add keeps them)\n`);
    io.out(`store: ${where}\n`);
    return 0;
  } catch (err) {
    return translate(err, values['kms-key-id'] as string | undefined);
  }
}

/** `keygate rotate` */
export async function rotateCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { 'value-file': { type: 'string' }, 'value-stdin': { type: 'boolean' } });
  if (values.help) {
    io.out(ROTATE_USAGE);
    return 0;
  }
  const secret = oneSecret(positionals, ROTATE_USAGE);
  if (values['broker-admin']) {
    const value = await readValue(values, io);
    const answer = await adminCall(values as AdminClientFlags, 'secrets:write', 'POST', `/v1/admin/secrets/${encodeURIComponent(secret)}/rotate`, { value: { base64: Buffer.from(value).toString('base64') } });
    value.fill(0);
    io.out(`rotated ${secret} to version ${String(answer.version)}\nvia: ${values['broker-admin']}\n`);
    return 0;
  }
  let kmsKeyId: string | undefined;
  try {
    const value = await readValue(values, io);
    let where = '';
    const binding = await withAdmin(values as StoreFlags, ({ config, store, providers }) => {
      where = storeWhere(config);
      kmsKeyId = store.snapshot().bindings.get(secret)?.kmsKeyId;
      return rotateSecret(store, providers, secret, value);
    });
    value.fill(0);
    io.out(`rotated ${binding.secret} to version ${binding.version}\nstore: ${where}\n`);
    return 0;
  } catch (err) {
    return translate(err, kmsKeyId);
  }
}

/** `keygate unbind` */
export async function unbindCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, {});
  if (values.help) {
    io.out(UNBIND_USAGE);
    return 0;
  }
  const secret = oneSecret(positionals, UNBIND_USAGE);
  if (values['broker-admin']) {
    await adminCall(values as AdminClientFlags, 'secrets:write', 'DELETE', `/v1/admin/secrets/${encodeURIComponent(secret)}`);
    io.out(`unbound ${secret}\nvia: ${values['broker-admin']}\n`);
    return 0;
  }
  try {
    const where = await withAdmin(values as StoreFlags, async ({ config, store }) => {
      await unbindSecret(store, secret);
      return storeWhere(config);
    });
    io.out(`unbound ${secret}\nstore: ${where}\n`);
    return 0;
  } catch (err) {
    return translate(err);
  }
}

/** `keygate revoke` */
export async function revokeCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(argv, { pcr0: { type: 'string', multiple: true }, instance: { type: 'string', multiple: true }, baseline: { type: 'string', multiple: true }, delegation: { type: 'string', multiple: true } });
  if (values.help) {
    io.out(REVOKE_USAGE);
    return 0;
  }
  if (values.delegation) {
    if (positionals.length || values.pcr0 || values.instance || values.baseline || values['broker-admin']) throw new UsageError(`--delegation combines with store options only\n\n${REVOKE_USAGE}`);
    return (await import('./delegations.js')).revokeDelegations(values.delegation as string[], values as StoreFlags, io);
  }
  const identities = { pcr0: (values.pcr0 as string[] | undefined) ?? [], instances: (values.instance as string[] | undefined) ?? [], baselines: (values.baseline as string[] | undefined) ?? [] };
  const anyIdentity = identities.pcr0.length + identities.instances.length + identities.baselines.length > 0;
  if ((positionals.length > 0) === anyIdentity || positionals.length > 1) throw new UsageError(`give one secret name, or --pcr0/--instance/--baseline\n\n${REVOKE_USAGE}`);
  for (const pcr0 of identities.pcr0) checkPcrFlags({ 0: pcr0 }, []);
  if (values['broker-admin']) {
    if (positionals.length) await adminCall(values as AdminClientFlags, 'revocations:write', 'POST', `/v1/admin/secrets/${encodeURIComponent(positionals[0]!)}/revoke`);
    else await adminCall(values as AdminClientFlags, 'revocations:write', 'POST', '/v1/admin/revocations', identities);
    io.out(`${positionals.length ? `revoked secret ${positionals[0]}` : 'revoked the named identities'}\nvia: ${values['broker-admin']}\n`);
    return 0;
  }
  try {
    return await withAdmin(values as StoreFlags, async ({ config, store }) => {
      if (positionals.length) {
        await revokeSecret(store, positionals[0]!);
        io.out(`revoked secret ${positionals[0]}\n`);
      } else {
        const r = await revokeIdentities(store, identities);
        io.out(`revoked: ${r.pcr0.length} PCR0 value(s), ${r.instances.length} instance(s), ${r.baselines.length} baseline(s) in force\n`);
      }
      io.out(`store: ${storeWhere(config)}\n`);
      return 0;
    });
  } catch (err) {
    return translate(err);
  }
}
