import { parseApprovalPolicy, ed25519Thumbprint, SchemaError } from '../../broker/policy/schema.js';
import type { ApprovalPolicy } from '../../broker/policy/types.js';
import { loadPrivateKeyFile, loadPublicKeyFile } from '../../broker/signing-key.js';
import { openAdminStore } from '../../broker/state.js';
import { openApprovalStore } from '../../broker/approval/open-approvals.js';
import { ApprovalError } from '../../broker/approval/request.js';
import { listApprovals, requestDigest, signDecision, submitDecision, type ApprovalView } from '../../broker/approval/operations.js';
import { parseCommand } from '../args.js';
import { STORE_OPTIONS, STORE_USAGE, storeConfig, type StoreFlags } from '../context.js';
import { UsageError } from '../errors.js';
import { parseDuration } from '../parse.js';
import type { CliIo } from '../io.js';

export const APPROVALS_USAGE = `Usage: keygate approvals list [--all] [--json] [store options]
       keygate approvals grant ID --key FILE [--digest HEX] [store options]
       keygate approvals deny ID --key FILE [--digest HEX] [store options]

Release requests for secrets bound with --approval (human approval, k of n approver keys).
  list               open requests (pending, or approved and awaiting the enclave's next request):
                     id, secret and version, enclave identity, time, expiry, grants so far
  --all              also the finished ones (released, denied, expired, stale)
  grant ID           sign the request with an approver's Ed25519 private key and store the grant
  deny ID            sign a denial: the request ends, nothing is released
  --key FILE         the approver's private key (JWK or PKCS#8 PEM; keygate keygen writes one)
  --digest HEX       the request's digest as list shows it (8..64 hex digits of it): refuse
                     (APPROVAL_CHANGED) if the request was changed in the store since it was reviewed
  --json             machine-readable output (failures too: {"error": {"code", "message"}})
${STORE_USAGE}
`;

/** Default of --approval-window. */
export const DEFAULT_APPROVAL_WINDOW = '15m';

/**
 * `bind --approval K-of FILE,FILE,... [--approval-window DUR]`: the approval policy, with each public key
 * (Ed25519; JWK or PEM, a private JWK's public half also works) stored by its RFC 7638 thumbprint.
 * Undefined when neither flag is given.
 */
export async function approvalPolicyFromFlags(approval: string | undefined, window: string | undefined): Promise<ApprovalPolicy | undefined> {
  if (approval === undefined) {
    if (window !== undefined) throw new UsageError('--approval-window needs --approval K-of FILE,FILE,...');
    return undefined;
  }
  const match = /^(\d{1,3})-of[ =]?(.+)$/.exec(approval.trim());
  if (!match) throw new UsageError(`--approval "${approval}" must be K-of FILE,FILE,... (e.g. 2-of alice.pub,bob.pub,carol.pub)`);
  const files = match[2]!.split(',').map((f) => f.trim()).filter((f) => f !== '');
  const approvers = [];
  for (const file of files) {
    let key;
    try {
      key = await loadPublicKeyFile(file);
    } catch (err) {
      throw new UsageError(`--approval: cannot read the public key ${file}: ${(err as Error).message}`);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new UsageError(`--approval: ${file} is not an Ed25519 key (approvers sign with Ed25519)`);
    const x = (key.export({ format: 'jwk' }) as { x: string }).x;
    approvers.push({ kid: ed25519Thumbprint(x), jwk: { kty: 'OKP', crv: 'Ed25519', x } });
  }
  const kids = approvers.map((a) => a.kid);
  const twice = files.filter((_, i) => kids.indexOf(kids[i]!) !== i);
  if (twice.length) throw new UsageError(`--approval: ${twice.join(', ')} repeat${twice.length === 1 ? 's' : ''} a key already listed: approvers must be distinct keys`);
  const k = Number(match[1]);
  if (k < 1 || k > approvers.length) throw new UsageError(`--approval: K must be 1..${approvers.length} (the number of distinct approver keys), not ${k}`);
  const windowSeconds = Math.round(parseDuration(window ?? DEFAULT_APPROVAL_WINDOW, '--approval-window') / 1000);
  try {
    return parseApprovalPolicy({ required: k, approvers, windowSeconds }, '--approval');
  } catch (err) {
    if (err instanceof SchemaError && err.path.endsWith('windowSeconds')) throw new UsageError('--approval-window must be 1m..7d');
    if (err instanceof SchemaError) throw new UsageError(err.message);
    throw err;
  }
}

function viewJson(v: ApprovalView): Record<string, unknown> {
  const r = v.request;
  return {
    id: r.id,
    secret: r.secret,
    version: r.version,
    status: v.status,
    digest: requestDigest(r),
    identity: r.identity,
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    grants: r.grants.map((g) => ({ kid: g.kid, at: g.at })),
    granted: v.granted,
    required: v.required,
    ...(r.denial ? { deniedBy: r.denial.kid } : {}),
  };
}

function viewLine(v: ApprovalView): string {
  const r = v.request;
  const i = r.identity;
  return [
    `${r.id}  ${r.secret} v${r.version}  ${v.status}  grants ${v.granted.length}/${v.required ?? '?'}${v.granted.length ? ` (${v.granted.join(', ')})` : ''}`,
    `    enclave ${i.moduleId}  pcr0 ${i.pcr0.slice(0, 16)}...  pcr1 ${i.pcr1.slice(0, 16)}...  pcr2 ${i.pcr2.slice(0, 16)}...${i.instance ? `  instance ${i.instance}` : ''}`,
    `    created ${r.createdAt}  expires ${r.expiresAt}  digest ${requestDigest(r).slice(0, 16)}`,
  ].join('\n');
}

/** `keygate approvals list|grant|deny` */
export async function approvalsCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values, positionals } = parseCommand(argv, { ...STORE_OPTIONS, key: { type: 'string' }, digest: { type: 'string' }, json: { type: 'boolean' }, all: { type: 'boolean' } }, 2);
  if (values.help) {
    io.out(APPROVALS_USAGE);
    return 0;
  }
  const [sub, id] = positionals;
  if (sub !== 'list' && sub !== 'grant' && sub !== 'deny') throw new UsageError(`give list, grant ID or deny ID${sub ? ` (not "${sub}")` : ''}`);
  if (sub === 'list' ? id !== undefined || values.key !== undefined || values.digest !== undefined : id === undefined || values.key === undefined) {
    throw new UsageError(sub === 'list' ? 'list takes no ID, --key or --digest' : `${sub} needs the request ID and --key FILE`);
  }
  const digest = values.digest as string | undefined;
  if (digest !== undefined && !/^[0-9a-fA-F]{8,64}$/.test(digest)) throw new UsageError('--digest must be 8..64 hex digits of the digest approvals list shows');
  const key = sub === 'list' ? undefined : await loadPrivateKeyFile(values.key as string).catch((err: unknown) => {
    throw new UsageError(`--key: ${(err as Error).message}`);
  });
  const config = await storeConfig(values as StoreFlags);
  const { store } = await openAdminStore(config);
  const approvals = await openApprovalStore(config.store);
  try {
    const snapshot = await store.refresh();
    if (sub === 'list') {
      const views = await listApprovals(approvals, snapshot, now(), Boolean(values.all));
      if (values.json) io.out(`${JSON.stringify(views.map(viewJson), null, 2)}\n`);
      else io.out(views.length ? `${views.map(viewLine).join('\n')}\n` : 'no open approval requests\n');
      return 0;
    }
    const request = await approvals.get(id!);
    if (!request) throw new ApprovalError('APPROVAL_NOT_FOUND', `no approval request ${id}`);
    // Pinned: what is signed is the request the approver reviewed (submitDecision then re-reads it and re-verifies).
    if (digest !== undefined && !requestDigest(request).startsWith(digest.toLowerCase())) {
      throw new ApprovalError('APPROVAL_CHANGED', `request ${id} is not the one reviewed: its digest is ${requestDigest(request).slice(0, 16)}..., not ${digest.toLowerCase()}; list it again`);
    }
    const signed = signDecision(request, sub, key!);
    const { request: after, changed } = await submitDecision(approvals, snapshot, id!, sub, signed, now());
    const binding = snapshot.bindings.get(after.secret);
    if (values.json) io.out(`${JSON.stringify({ id: after.id, decision: sub, kid: signed.kid, changed, grants: after.grants.length, required: binding?.approval?.required ?? null, moduleId: after.identity.moduleId })}\n`);
    else if (sub === 'deny') io.out(`denied ${after.id} (${after.secret} v${after.version}, enclave ${after.identity.moduleId}) with key ${signed.kid}: nothing will be released for it\n`);
    else io.out(`${changed ? 'granted' : 'already granted by this key (counted once)'}: ${after.id} (${after.secret} v${after.version}, enclave ${after.identity.moduleId}), ${after.grants.length} of ${binding?.approval?.required ?? '?'} grants, key ${signed.kid}\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof ApprovalError)) throw err;
    if (values.json) io.out(`${JSON.stringify({ error: { code: err.code, message: err.message } })}\n`);
    io.err(`keygate approvals: ${err.code}: ${err.message}\n`);
    return 2;
  } finally {
    approvals.close();
    store.close();
  }
}
