import { execFileSync } from 'node:child_process';
import { hostname, userInfo } from 'node:os';
import { SchemaError, SECRET_NAME } from '../../broker/policy/schema.js';
import { EifError } from '../../broker/eif/format.js';
import { OperationError } from '../../broker/ops/errors.js';
import { approveBaselineFile, baselinePath, checkRebuild, DEFAULT_BASELINE_DIR, generateBaselineKey, loadBaselineKey, readBaseline, recordBaseline } from '../../broker/ops/baselines.js';
import { approvalStatus, approveStoredBaseline } from '../../broker/ops/stored-baselines.js';
import { storeLabel } from '../../broker/store/open-store.js';
import { DEV_ADMIN_KEY, ensureDevAdminKey, STORE_OPTIONS, STORE_USAGE } from '../context.js';
import { approvalSummary, approvalWarning, coded, configuredAdminKeys, withStore } from '../store-ops.js';
import { access } from 'node:fs/promises';
import { UsageError, usageError } from '../errors.js';
import { parseCommand } from '../args.js';
import type { CliIo } from '../io.js';
import { progressFor } from '../progress.js';
import { approveBaseline } from '../../broker/policy/baseline.js';

export const RECORD_USAGE = `Usage: keygate record (--eif FILE | --nitro-cli-json FILE) --name NAME [options]
       keygate record --check FILE --baseline NAME|PATH

Records a build's measurements as pcr-baselines/NAME.json, or checks that a
rebuilt image (EIF or nitro-cli JSON) reproduces a baseline's PCRs.

  --image-digest D   container image digest the EIF was built from
  --commit SHA       git commit (default: $GITHUB_SHA or git rev-parse HEAD)
  --builder TEXT     who built it (default: the CI run, or user@host)
  --sign-key KEY     sign the baseline (Ed25519 private JWK or PEM)
  --baselines DIR    where baselines live (default ./pcr-baselines)
  --force            overwrite an existing baseline of that name

On a terminal, reading a large --eif shows its progress on stderr (never when
output is piped).
Exit status: 0 recorded / reproduced, 1 PCRs differ or image malformed, 2 usage error.
`;

export const APPROVE_USAGE = `Usage: keygate approve NAME|PATH (--key ADMIN_KEY | --dev) [--baselines DIR] [store options]
       keygate approve NAME|PATH --key ADMIN_KEY --file-only [--baselines DIR]

Adds an admin approval (an Ed25519 JWS over the baseline's digest) to the
stored baseline (one atomic store update) and to its file (NAME in the
baselines directory, or PATH) when there is one. A baseline file not yet in
the store is stored with the approval; NAME without a file approves the
stored copy. Brokers honour a rule naming a baseline only once the stored
copy carries approvalsRequired approvals from distinct adminKeys: the
command says how many it has, and warns when that is not enough.

  --key FILE         the admin's Ed25519 private key (JWK or PEM); with --dev
                     the default is the development admin key
  --baselines DIR    where baselines live (default ./pcr-baselines)
  --file-only        sign the file only, leaving the store alone (approval by
                     review; store it later with keygate baseline put)
  --broker-admin URL --token T
                     sign here, add the approval through the broker's admin API
                     (token scope baselines:approve; needs the baseline file)
${STORE_USAGE}
`;

export const KEYGEN_USAGE = `Usage: keygate keygen --out FILE

Creates an Ed25519 key pair for signing baselines or approving them: the
private JWK goes to FILE (mode 0600), the public JWK to FILE.pub.
`;

function defaultCommit(): string | undefined {
  if (process.env.GITHUB_SHA && /^[0-9a-f]{40}$/.test(process.env.GITHUB_SHA)) return process.env.GITHUB_SHA;
  try {
    const sha = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return /^[0-9a-f]{40}$/.test(sha) ? sha : undefined;
  } catch {
    return undefined;
  }
}

function defaultBuilder(): string {
  const e = process.env;
  if (e.GITHUB_ACTIONS === 'true') return `github-actions ${e.GITHUB_REPOSITORY ?? '?'} run ${e.GITHUB_RUN_ID ?? '?'} (${e.GITHUB_WORKFLOW ?? 'workflow'})`;
  return `${userInfo().username}@${hostname()}`;
}

/** `keygate record` */
export async function recordCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values } = parseCommand(argv, {
    eif: { type: 'string' },
    'nitro-cli-json': { type: 'string' },
    name: { type: 'string' },
    'image-digest': { type: 'string' },
    commit: { type: 'string' },
    builder: { type: 'string' },
    'sign-key': { type: 'string' },
    baselines: { type: 'string' },
    force: { type: 'boolean' },
    check: { type: 'string' },
    baseline: { type: 'string' },
  });
  if (values.help) {
    io.out(RECORD_USAGE);
    return 0;
  }
  const dir = values.baselines ?? DEFAULT_BASELINE_DIR;
  try {
    if (values.check) {
      if (!values.baseline) throw new UsageError('--check needs --baseline NAME|PATH');
      const { baseline, rebuilt, differ } = await checkRebuild(values.check, baselinePath(values.baseline, dir));
      if (differ.length === 0) {
        io.out(`reproduced: ${values.check} matches baseline ${baseline.name} (PCR0/1/2${baseline.pcrs['8'] ? '/8' : ''})\n`);
        return 0;
      }
      for (const i of differ) io.out(`PCR${i} differs: baseline ${baseline.pcrs[i] ?? '(none)'}, rebuilt ${rebuilt.pcrs[i] ?? '(none)'}\n`);
      io.out(`NOT REPRODUCED: ${differ.length} PCR(s) differ from baseline ${baseline.name}\n`);
      return 1;
    }
    const input = values.eif ?? values['nitro-cli-json'];
    if (!input || (values.eif && values['nitro-cli-json'])) throw new UsageError('give exactly one of --eif FILE or --nitro-cli-json FILE');
    if (!values.name) throw new UsageError('--name NAME is required');
    // The name is a file name under --baselines: checked here so "../x" is a usage error naming the flag.
    if (!SECRET_NAME.test(values.name)) throw new UsageError(`--name: "${values.name}" is not a baseline name (letters, digits, ".", "_", "-"; starts with a letter or digit; up to 128)`);
    const commit = values.commit ?? defaultCommit();
    // Never with --json, should record take it (its output would be for a program).
    const progress = values.eif ? progressFor(io, values.eif, { json: argv.includes('--json') }) : undefined;
    const { path: out, baseline } = await recordBaseline({
      image: input,
      name: values.name,
      dir,
      builder: values.builder ?? defaultBuilder(),
      ...(commit ? { gitCommit: commit } : {}),
      ...(values['image-digest'] ? { imageDigest: values['image-digest'] } : {}),
      ...(values['sign-key'] ? { signKeyFile: values['sign-key'] } : {}),
      force: Boolean(values.force),
      now: new Date(now()),
      ...(progress ? { onProgress: progress.onProgress } : {}),
    }).finally(() => progress?.end());
    io.out(`recorded ${out}: PCR0 ${baseline.pcrs['0'].slice(0, 16)}… (${baseline.signature ? 'signed' : 'unsigned'}, 0 approvals)\n`);
    return 0;
  } catch (err) {
    if (err instanceof SchemaError) throw new UsageError(err.message);
    if (err instanceof OperationError) throw usageError(err, { KEY_UNUSABLE: (m) => `--sign-key: ${m}`, ALREADY_EXISTS: (m) => `${m}: baselines are history; choose a new name or pass --force` });
    if (err instanceof EifError) {
      io.out(`INVALID IMAGE: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/** `keygate approve` */
export async function approveCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    { ...STORE_OPTIONS, key: { type: 'string' }, baselines: { type: 'string' }, 'file-only': { type: 'boolean' }, 'broker-admin': { type: 'string' }, token: { type: 'string' }, aud: { type: 'string' } },
    1,
  );
  if (values.help) {
    io.out(APPROVE_USAGE);
    return 0;
  }
  const keyFile = values.key ?? (values.dev && !values['file-only'] ? DEV_ADMIN_KEY : undefined);
  if (positionals.length !== 1 || !keyFile) throw new UsageError('expected: keygate approve NAME|PATH --key ADMIN_KEY (or --dev)');
  const arg = positionals[0]!;
  const path = baselinePath(arg, values.baselines);
  const decorate = { KEY_UNUSABLE: (m: string) => `--key: ${m}` };
  if (values['file-only']) {
    if (values.config || values.store || values.state || values.dev) throw new UsageError('--file-only signs the file only: it takes no store options');
    const { baseline, approval, added } = await approveBaselineFile(path, keyFile, new Date(now())).catch((err: unknown) => {
      throw usageError(err, decorate);
    });
    io.out(added ? `approved ${baseline.name} with key ${approval.kid} in ${path}: ${baseline.approvals.length} approval(s)\n` : `${path} already carries an approval by this key (${approval.kid})\n`);
    return 0;
  }
  const isPath = arg.includes('/') || arg.endsWith('.json');
  const hasFile = await access(path).then(() => true, () => false);
  if (values['broker-admin']) return approveViaApi(io, values, path, keyFile, new Date(now()));
  try {
    // A PATH must be there; a NAME without a file is the stored copy.
    const file = hasFile || isPath ? await readBaseline(path) : undefined;
    if (values.dev && !values.key && !(values.config === undefined && process.env.KEYGATE_CONFIG)) await ensureDevAdminKey();
    return await withStore(values, async ({ config, store }) => {
      const key = await loadBaselineKey(keyFile).catch((err: unknown) => {
        throw usageError(err, decorate);
      });
      const where = storeLabel(config.store);
      // The store first: it may refuse (another build under the name), and then the file is left alone too.
      const stored = await approveStoredBaseline(store, file?.name ?? arg, key, new Date(now()), file);
      const status = await approvalStatus(stored.baseline, await configuredAdminKeys(config), config.approvalsRequired);
      io.out(
        stored.added
          ? `approved ${stored.baseline.name} with key ${stored.approval.kid} in ${where}: ${stored.baseline.approvals.length} approval(s) (${approvalSummary(status)})\n`
          : `${stored.baseline.name} in ${where} already carries an approval by this key (${stored.approval.kid}); ${approvalSummary(status)}\n`,
      );
      if (file) {
        const f = await approveBaselineFile(path, keyFile, new Date(now()));
        io.out(f.added ? `approved ${f.baseline.name} in ${path}: ${f.baseline.approvals.length} approval(s)\n` : `${path} already carries an approval by this key\n`);
      }
      const warning = approvalWarning(stored.baseline.name, status);
      if (warning) io.err(`keygate approve: warning: ${warning}\n`);
      return 0;
    });
  } catch (err) {
    throw coded(err);
  }
}

/** `keygate keygen` */
export async function keygenCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(argv, { out: { type: 'string' } });
  if (values.help) {
    io.out(KEYGEN_USAGE);
    return 0;
  }
  if (!values.out) throw new UsageError('--out FILE is required');
  const { kid } = await generateBaselineKey(values.out).catch((err: unknown) => {
    throw usageError(err, { ALREADY_EXISTS: (m) => `${m}; refusing to overwrite a key` });
  });
  io.out(`wrote ${values.out} (private, 0600) and ${values.out}.pub; kid ${kid}\n`);
  return 0;
}

/**
 * `approve --broker-admin URL --token T`: the approval is signed here (the approver's key never leaves
 * this machine) over the baseline file, and posted; the broker checks it under its adminKeys and adds it
 * to its stored copy of the same build. --key is the approver key, so the API token comes from --token.
 */
async function approveViaApi(io: CliIo, flags: { 'broker-admin'?: string; token?: string; aud?: string }, path: string, keyFile: string, now: Date): Promise<number> {
  if (!flags.token) throw new UsageError('approve --broker-admin needs --token T (an admin API token with scope baselines:approve; --key is the approver key)');
  const baseline = await readBaseline(path).catch((err: unknown) => {
    throw coded(err);
  });
  const key = await loadBaselineKey(keyFile).catch((err: unknown) => {
    throw usageError(err, { KEY_UNUSABLE: (m: string) => `--key: ${m}` });
  });
  const approval = await approveBaseline(baseline, key, now);
  const { adminCall } = await import('../admin-client.js');
  // Only the token: --key here is the approver key, not an admin API key.
  const answer = await adminCall({ 'broker-admin': flags['broker-admin'], token: flags.token, ...(flags.aud ? { aud: flags.aud } : {}) }, 'baselines:approve', 'POST', `/v1/admin/baselines/${encodeURIComponent(baseline.name)}/approvals`, approval);
  io.out(`${answer.added ? 'approved' : 'already approved by this key:'} ${baseline.name} with key ${approval.kid}: ${String(answer.approvals)} approval(s)\nvia: ${flags['broker-admin']}\n`);
  return 0;
}
