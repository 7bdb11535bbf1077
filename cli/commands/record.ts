import { execFileSync } from 'node:child_process';
import { readFile, access, mkdir, open } from 'node:fs/promises';
import { hostname, userInfo } from 'node:os';
import { dirname, join } from 'node:path';
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { approveBaseline, formatBaseline, parseBaseline, signBaseline, type Baseline, type BaselineBody } from '../../broker/policy/baseline.js';
import { SchemaError } from '../../broker/policy/schema.js';
import { loadPrivateKeyFile } from '../../broker/signing-key.js';
import { writeFileAtomic } from '../../broker/store/atomic.js';
import { EifError, EIF_MAGIC } from '../eif/format.js';
import { measurementsFromNitroCli } from '../eif/nitro-cli-json.js';
import { readEif } from './eif.js';
import { UsageError } from '../errors.js';
import { parseCommand } from '../args.js';
import type { CliIo } from '../io.js';

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

Exit status: 0 recorded / reproduced, 1 PCRs differ or image malformed, 2 usage error.
`;

export const APPROVE_USAGE = `Usage: keygate approve NAME|PATH --key ADMIN_KEY [--baselines DIR]

Adds an admin approval (an Ed25519 JWS over the baseline's digest) to a
baseline file. Brokers accept a binding to a baseline only once it carries
the configured number of approvals from distinct admin keys.
`;

export const KEYGEN_USAGE = `Usage: keygate keygen --out FILE

Creates an Ed25519 key pair for signing baselines or approving them: the
private JWK goes to FILE (mode 0600), the public JWK to FILE.pub.
`;

const DEFAULT_DIR = 'pcr-baselines';

/** Resolves a baseline argument: an existing path, or NAME inside the baselines directory. */
export function baselinePath(arg: string, dir = DEFAULT_DIR): string {
  if (arg.includes('/') || arg.endsWith('.json')) return arg;
  return join(dir, `${arg}.json`);
}

export async function readBaseline(path: string): Promise<Baseline> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new UsageError(`cannot read baseline ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return parseBaseline(json, path);
  } catch (err) {
    if (err instanceof SchemaError) throw new UsageError(`invalid baseline: ${err.message}`, { hint: false });
    throw err;
  }
}

/** PCRs of an EIF or of nitro-cli JSON output, detected by content. */
async function measure(path: string): Promise<{ pcrs: BaselineBody['pcrs']; eifSha384?: string; source: BaselineBody['source'] }> {
  let head: Buffer;
  try {
    const handle = await open(path, 'r');
    head = Buffer.alloc(4);
    await handle.read(head, 0, 4, 0);
    await handle.close();
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (head.equals(EIF_MAGIC)) {
    const d = await readEif(path);
    return { pcrs: d.pcrs as BaselineBody['pcrs'], eifSha384: d.fileSha384, source: 'eif' };
  }
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch {
    throw new EifError(`${path} is neither an EIF nor JSON`);
  }
  return { pcrs: measurementsFromNitroCli(json), source: 'nitro-cli' };
}

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

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
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
  const dir = values.baselines ?? DEFAULT_DIR;
  try {
    if (values.check) {
      if (!values.baseline) throw new UsageError('--check needs --baseline NAME|PATH');
      const baseline = await readBaseline(baselinePath(values.baseline, dir));
      const rebuilt = await measure(values.check);
      const differ = (['0', '1', '2', '8'] as const).filter((i) => baseline.pcrs[i] !== rebuilt.pcrs[i]);
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
    const measured = await measure(input);
    const commit = values.commit ?? defaultCommit();
    const body: BaselineBody = {
      formatVersion: 1,
      name: values.name,
      pcrs: measured.pcrs,
      ...(measured.eifSha384 ? { eifSha384: measured.eifSha384 } : {}),
      ...(values['image-digest'] ? { imageDigest: values['image-digest'] } : {}),
      ...(commit ? { gitCommit: commit } : {}),
      builder: values.builder ?? defaultBuilder(),
      createdAt: new Date(now()).toISOString(),
      source: measured.source,
    };
    let baseline: Baseline = parseBaseline({ ...body, approvals: [] }, 'baseline');
    if (values['sign-key']) {
      const key = await loadPrivateKeyFile(values['sign-key']).catch((err: Error) => {
        throw new UsageError(`--sign-key: ${err.message}`);
      });
      baseline = { ...baseline, signature: await signBaseline(baseline, key) };
    }
    const out = join(dir, `${baseline.name}.json`);
    if (!values.force && (await exists(out))) throw new UsageError(`${out} exists: baselines are history; choose a new name or pass --force`);
    await mkdir(dirname(out), { recursive: true });
    await writeFileAtomic(out, formatBaseline(baseline), 0o644);
    io.out(`recorded ${out}: PCR0 ${baseline.pcrs['0'].slice(0, 16)}… (${baseline.signature ? 'signed' : 'unsigned'}, 0 approvals)\n`);
    return 0;
  } catch (err) {
    if (err instanceof SchemaError) throw new UsageError(err.message);
    if (err instanceof EifError) {
      io.out(`INVALID IMAGE: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/** `keygate approve` */
export async function approveCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values, positionals } = parseCommand(argv, { key: { type: 'string' }, baselines: { type: 'string' } }, 1);
  if (values.help) {
    io.out(APPROVE_USAGE);
    return 0;
  }
  if (positionals.length !== 1 || !values.key) throw new UsageError('expected: keygate approve NAME|PATH --key ADMIN_KEY');
  const path = baselinePath(positionals[0]!, values.baselines);
  const baseline = await readBaseline(path);
  const key = await loadPrivateKeyFile(values.key).catch((err: Error) => {
    throw new UsageError(`--key: ${err.message}`);
  });
  const approval = await approveBaseline(baseline, key, new Date(now()));
  if (baseline.approvals.some((a) => a.kid === approval.kid)) {
    io.out(`${baseline.name} already carries an approval by this key (${approval.kid})\n`);
    return 0;
  }
  const updated: Baseline = { ...baseline, approvals: [...baseline.approvals, approval] };
  await writeFileAtomic(path, formatBaseline(updated), 0o644);
  io.out(`approved ${baseline.name} with key ${approval.kid}: ${updated.approvals.length} approval(s)\n`);
  return 0;
}

/** `keygate keygen` */
export async function keygenCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values } = parseCommand(argv, { out: { type: 'string' } });
  if (values.help) {
    io.out(KEYGEN_USAGE);
    return 0;
  }
  if (!values.out) throw new UsageError('--out FILE is required');
  if (await exists(values.out)) throw new UsageError(`${values.out} exists; refusing to overwrite a key`);
  const { privateKey } = generateKeyPairSync('ed25519');
  const pub = createPublicKey(privateKey).export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(pub, 'sha256');
  await mkdir(dirname(values.out), { recursive: true });
  await writeFileAtomic(values.out, `${JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid })}\n`, 0o600);
  await writeFileAtomic(`${values.out}.pub`, `${JSON.stringify({ ...pub, kid, alg: 'EdDSA', use: 'sig' })}\n`, 0o644);
  io.out(`wrote ${values.out} (private, 0600) and ${values.out}.pub; kid ${kid}\n`);
  return 0;
}
