import type { KeyObject } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { getConnInfo } from '@hono/node-server/conninfo';
import { CodedError } from '../../lib/coded-error.js';
import { bindSecret, MAX_SECRET_BYTES, pcrSet, revokeIdentities, revokeSecret, rotateSecret, unbindSecret } from '../admin.js';
import { unrevokeIdentities, unrevokeSecret } from '../ops/unrevoke.js';
import { addAllowRule, approvalStatus, listBaselines, putStoredBaseline } from '../ops/stored-baselines.js';
import { pcr3OfRole, resolveRule } from '../ops/bind-rules.js';
import { countApprovals, parseBaseline, type Approval, type Baseline } from '../policy/baseline.js';
import { SECRET_NAME } from '../policy/schema.js';
import type { AllowRule, Binding, Ec2TagRule, ProviderName, ReleaseMode, Revocations } from '../policy/types.js';
import type { BindingStore, StoreSnapshot } from '../store/store.js';
import type { KeyProviders } from '../kms/provider.js';
import type { PcrValues } from '../../lib/pcrs.js';
import type { AdminRecord, AuditSink } from '../audit/sink.js';
import type { NonceRegistry } from '../nonce/registry.js';
import { DuplicateKeyError, parseJsonStrict } from '../strict-json.js';
import { ADMIN_HTTP_STATUS, type AdminApiErrorCode } from '../http-status.js';
import type { Logger } from '../log.js';
import { requestLogger } from '../http-log.js';
import { AdminAuthError, bearerToken, requireScope, verifyAdminToken, type AdminApiKey, type AdminPrincipal, type AdminScope } from './token.js';

/**
 * The admin HTTP API: every store operation of the CLI as a route under
 * /v1/admin, each behind a short-lived scoped JWT (token.ts), each running
 * the same operation the CLI runs (broker/admin.ts, broker/ops/*), each
 * action audited (who, what, versions; never a value): a change has an
 * intent record (outcome "pending") durable before the store is touched and
 * an outcome record durable before the answer. Values come only in JSON bodies, never in URLs.
 */

export interface AdminAppDependencies {
  readonly store: BindingStore;
  readonly providers: KeyProviders;
  readonly audit: AuditSink;
  /** Admin API keys (adminApiKeys): who may call. */
  readonly keys: readonly AdminApiKey[];
  /** Baseline approver keys (adminKeys): an approval posted here must verify under one of them. */
  readonly approverKeys: readonly KeyObject[];
  readonly audience: string;
  /** Valid approvals a baseline needs (approvalsRequired; default 1): what bind answers say about a rule naming one. */
  readonly approvalsRequired?: number;
  /** Single use of jti: the broker's nonce registry (shared by replicas when on DynamoDB). */
  readonly replay: NonceRegistry;
  readonly maxBodyBytes: number;
  readonly clock: () => number;
  readonly log: Logger;
  /** Where the one-line-per-request log goes (none when absent). */
  readonly requestLog?: Logger;
}

/** An admin API refusal with its stable code (and, for token refusals, the reason). */
export class AdminApiError extends CodedError<AdminApiErrorCode> {
  override readonly name = 'AdminApiError';
}

function answer(c: Context, code: AdminApiErrorCode, message: string, reason?: string): Response {
  return c.json({ error: { code, message, ...(reason ? { reason } : {}) } }, ADMIN_HTTP_STATUS[code]);
}

function isAdminCode(code: unknown): code is AdminApiErrorCode {
  return typeof code === 'string' && Object.hasOwn(ADMIN_HTTP_STATUS, code);
}

/** The coded refusal an operation's error becomes; anything unknown is INTERNAL_ERROR (detail only in the log). */
function codeOf(err: unknown): { code: AdminApiErrorCode; message: string } {
  if (err instanceof CodedError && isAdminCode(err.code)) return { code: err.code, message: err.message };
  if (err instanceof CodedError && /UNAVAILABLE|THROTTL|TIMEOUT/.test(err.code)) return { code: 'STORE_UNAVAILABLE', message: 'the store is unavailable; retry' };
  return { code: 'INTERNAL_ERROR', message: 'internal error' };
}

function clientOf(c: Context): string {
  try {
    return getConnInfo(c).remote.address ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

async function jsonBody(c: Context): Promise<Record<string, unknown>> {
  const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json') throw new AdminApiError('BAD_REQUEST', 'content-type must be application/json');
  let body: unknown;
  try {
    body = parseJsonStrict(await c.req.text());
  } catch (err) {
    throw new AdminApiError('BAD_REQUEST', err instanceof DuplicateKeyError ? 'body repeats an object key' : 'body is not valid JSON');
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new AdminApiError('BAD_REQUEST', 'body must be a JSON object');
  return body as Record<string, unknown>;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** `value: { base64 }` or `value: { text }` (UTF-8): the secret's exact bytes. */
function valueOf(body: Record<string, unknown>): Uint8Array {
  const v = body.value as Record<string, unknown> | undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v) || Object.keys(v).length !== 1) throw new AdminApiError('BAD_REQUEST', 'value must be {"base64": "..."} or {"text": "..."}');
  let bytes: Uint8Array;
  if (typeof v.base64 === 'string' && v.base64.length % 4 === 0 && BASE64.test(v.base64)) bytes = new Uint8Array(Buffer.from(v.base64, 'base64'));
  else if (typeof v.text === 'string') bytes = new TextEncoder().encode(v.text);
  else throw new AdminApiError('BAD_REQUEST', 'value must be {"base64": "..."} or {"text": "..."}');
  if (bytes.length === 0) throw new AdminApiError('BAD_REQUEST', 'the secret value is empty');
  if (bytes.length > MAX_SECRET_BYTES) throw new AdminApiError('BAD_REQUEST', `the secret value is larger than ${MAX_SECRET_BYTES / 1024} KiB`);
  return bytes;
}

function stringList(body: Record<string, unknown>, key: string): string[] {
  const v = body[key];
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > 100 || v.some((x) => typeof x !== 'string' || x.length === 0 || x.length > 256)) throw new AdminApiError('BAD_REQUEST', `${key} must be a list of strings`);
  return v as string[];
}

function secretParam(c: Context): string {
  const name = c.req.param('name') ?? '';
  if (!SECRET_NAME.test(name)) throw new AdminApiError('BAD_REQUEST', 'not a valid secret name ([A-Za-z0-9._-], up to 128)');
  return name;
}

function identities(body: Record<string, unknown>): Partial<Revocations> {
  for (const k of Object.keys(body)) if (!['pcr0', 'instances', 'baselines'].includes(k)) throw new AdminApiError('BAD_REQUEST', `unknown field "${k}" (pcr0, instances, baselines)`);
  const r = { pcr0: stringList(body, 'pcr0'), instances: stringList(body, 'instances'), baselines: stringList(body, 'baselines') };
  if (r.pcr0.length + r.instances.length + r.baselines.length === 0) throw new AdminApiError('BAD_REQUEST', 'name at least one of pcr0, instances, baselines');
  for (const p of r.pcr0) if (!/^(?:0x)?[0-9a-fA-F]{96}$/.test(p)) throw new AdminApiError('BAD_REQUEST', `pcr0: expected 96 hex characters, got "${p.slice(0, 100)}"`);
  return r;
}

/** An object member of a body (not null, not an array), or BAD_REQUEST. */
function objectOf(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new AdminApiError('BAD_REQUEST', `${what} must be a JSON object`);
  return v as Record<string, unknown>;
}

/**
 * One allowed measurement set, as the CLI's bind flags give it: `{"pcrs": {"0":…, "1":…, "2":…}}` (3, 4, 8
 * optional), or `{"baseline": NAME}` (a stored baseline's image PCRs) to which `pcrs` may add 3 and 4;
 * `iamRole` (an ARN) stands for PCR3. Resolved by the resolver the CLI uses (ops/bind-rules.ts).
 *
 * @throws AdminApiError BAD_REQUEST; OperationError INPUT_INVALID, BASELINE_NOT_FOUND; SchemaError
 */
function ruleOf(raw: unknown, snapshot: StoreSnapshot): { rule: AllowRule; baseline?: Baseline } {
  const spec = objectOf(raw, 'an allow rule');
  for (const k of Object.keys(spec)) if (!['pcrs', 'baseline', 'iamRole'].includes(k)) throw new AdminApiError('BAD_REQUEST', `unknown field "${k}" in an allow rule (pcrs, baseline, iamRole)`);
  const pcrs = spec.pcrs === undefined ? undefined : objectOf(spec.pcrs, 'pcrs');
  if (pcrs && Object.values(pcrs).some((v) => typeof v !== 'string')) throw new AdminApiError('BAD_REQUEST', 'each PCR value is a hex string');
  const given = (pcrs ?? {}) as PcrValues;
  if (spec.iamRole !== undefined && (typeof spec.iamRole !== 'string' || given[3] !== undefined)) throw new AdminApiError('BAD_REQUEST', 'iamRole is an IAM role ARN, given instead of pcrs.3 (not both)');
  const extra: PcrValues<3 | 4> = {
    ...(spec.iamRole !== undefined ? { 3: pcr3OfRole(spec.iamRole as string) } : given[3] !== undefined ? { 3: given[3] } : {}),
    ...(given[4] !== undefined ? { 4: given[4] } : {}),
  };
  if (spec.baseline === undefined) {
    if (!pcrs) throw new AdminApiError('BAD_REQUEST', 'an allow rule is {"pcrs": {"0": hex, "1": hex, "2": hex, ...}} or {"baseline": NAME}');
    return resolveRule({ rule: pcrSet({ ...given }) }, snapshot, extra);
  }
  if (typeof spec.baseline !== 'string' || !SECRET_NAME.test(spec.baseline)) throw new AdminApiError('BAD_REQUEST', 'baseline must be a baseline name ([A-Za-z0-9._-], up to 128)');
  // The build's measurements (PCR0/1/2/8) come from the baseline; a rule may add only the role and the instance.
  if (Object.keys(given).some((k) => k !== '3' && k !== '4')) throw new AdminApiError('BAD_REQUEST', 'a rule naming a baseline takes PCR0/1/2/8 from it: pcrs may add only 3 and 4');
  return resolveRule({ stored: spec.baseline }, snapshot, extra);
}

/** `instanceTag: {"key": K, "value": V}` (the CLI's --instance-tag K=V); its lengths are the binding schema's to check. */
function instanceTagOf(body: Record<string, unknown>): Ec2TagRule | undefined {
  if (body.instanceTag === undefined) return undefined;
  const t = objectOf(body.instanceTag, 'instanceTag');
  if (Object.keys(t).sort().join(',') !== 'key,value' || typeof t.key !== 'string' || typeof t.value !== 'string') {
    throw new AdminApiError('BAD_REQUEST', 'instanceTag must be {"key": "...", "value": "..."} (an EC2 tag)');
  }
  return { key: t.key, value: t.value };
}

/** What an operation reports for its audit record besides who. */
interface Outcome<T> {
  readonly result: T;
  readonly versionAfter?: number | null;
  readonly detail?: Record<string, unknown>;
}

export function createAdminApp(deps: AdminAppDependencies): Hono {
  const app = new Hono();
  const shownOf = ({ ciphertext: _c, ...shown }: Binding): Omit<Binding, 'ciphertext'> => shown;
  /** For rules naming a baseline: whether brokers honour it yet (the CLI warns on BASELINE_NOT_APPROVED, as on the store). */
  const baselineStatus = async (rules: ReadonlyArray<{ rule: AllowRule; baseline?: Baseline }>): Promise<{ baselines?: Array<Record<string, unknown>> }> => {
    const named = rules.filter((r) => r.rule.baseline !== undefined && r.baseline);
    if (!named.length) return {};
    const fresh = deps.store.snapshot().baselines;
    return { baselines: await Promise.all(named.map(async (r) => ({ name: r.rule.baseline, ...(await approvalStatus(fresh.get(r.rule.baseline!) ?? r.baseline!, deps.approverKeys, deps.approvalsRequired ?? 1)) }))) };
  };
  if (deps.requestLog) app.use('*', requestLogger(deps.requestLog, 'admin'));
  app.use(
    '*',
    bodyLimit({ maxSize: deps.maxBodyBytes, onError: (c) => answer(c, 'PAYLOAD_TOO_LARGE', `body larger than ${deps.maxBodyBytes} bytes`) }),
  );

  /**
   * Authenticates, checks the scope, runs `op`, and audits what happened (ok or the refusal code). The
   * audit record is durable before the answer; if it cannot be written after a change was made, the
   * caller is told AUDIT_UNAVAILABLE (the change stands: the store was written first).
   */
  const route = <T>(action: string, scope: AdminScope, op: (c: Context, who: AdminPrincipal) => Promise<Outcome<T> & { secret?: string | null; versionBefore?: number | null }>) => async (c: Context): Promise<Response> => {
    // A change is announced (an intent record, durable) before the store is touched: a crash or a full
    // disk after the change leaves at least who asked for what. Reads get only their outcome record.
    const mutates = scope !== 'secrets:read' && scope !== 'audit:read';
    let who: AdminPrincipal;
    try {
      who = await verifyAdminToken(bearerToken(c.req.header('authorization')), { keys: deps.keys, audience: deps.audience, now: deps.clock(), replay: deps.replay });
      requireScope(who, scope);
    } catch (err) {
      if (!(err instanceof AdminAuthError)) throw err;
      deps.log('warn', 'admin API request refused', { action, code: err.code, reason: err.reason, client: clientOf(c) });
      return answer(c, err.code, err.message, err.reason);
    }
    // Values travel in bodies only: a query string is refused before anything is recorded (it could hold one).
    if (new URL(c.req.url).search !== '') return answer(c, 'BAD_REQUEST', 'admin routes take no query string: send values in the JSON body');
    // Only the /secrets/:name routes name a secret. The name comes from the URL: recorded only once it is a
    // valid secret name, so text pasted there by mistake (a value) never reaches the audit log or the log.
    const named = c.req.path.startsWith('/v1/admin/secrets/') ? (c.req.param('name') ?? null) : null;
    if (named !== null && !SECRET_NAME.test(named)) return answer(c, 'BAD_REQUEST', 'not a valid secret name ([A-Za-z0-9._-], up to 128)');
    // Baseline names follow the same rule as secret names (policy/baseline.ts).
    const baselineName = c.req.path.startsWith('/v1/admin/baselines/') ? c.req.param('name') : undefined;
    if (baselineName !== undefined && !SECRET_NAME.test(baselineName)) return answer(c, 'BAD_REQUEST', 'not a valid baseline name ([A-Za-z0-9._-], up to 128)');
    if (!deps.audit.healthy) return answer(c, 'AUDIT_UNAVAILABLE', 'the audit log cannot be written; nothing was done');
    const secret = named;
    const versionBefore = secret ? (deps.store.snapshot().bindings.get(secret)?.version ?? null) : null;
    if (mutates) {
      try {
        await deps.audit.appendAdmin({ time: new Date(deps.clock()).toISOString(), action, outcome: 'pending', kid: who.kid, jti: who.jti, secret, versionBefore, versionAfter: null, client: clientOf(c) });
      } catch {
        deps.log('error', 'admin action refused: its intent could not be audited', { action, secret });
        return answer(c, 'AUDIT_UNAVAILABLE', 'the audit log cannot be written; nothing was done');
      }
    }
    let outcome: (Outcome<T> & { secret?: string | null; versionBefore?: number | null }) | undefined;
    let refusal: { code: AdminApiErrorCode; message: string } | undefined;
    try {
      outcome = await op(c, who);
    } catch (err) {
      refusal = codeOf(err);
      if (refusal.code === 'INTERNAL_ERROR') deps.log('error', 'admin API operation failed', { action, error: err instanceof Error ? err.name : 'unknown' });
    }
    const record: AdminRecord = {
      time: new Date(deps.clock()).toISOString(),
      action,
      outcome: refusal ? refusal.code : 'ok',
      kid: who.kid,
      jti: who.jti,
      secret: outcome?.secret !== undefined ? outcome.secret : secret,
      versionBefore: outcome?.versionBefore !== undefined ? outcome.versionBefore : versionBefore,
      versionAfter: outcome?.versionAfter ?? null,
      ...(outcome?.detail ? { detail: outcome.detail } : {}),
      client: clientOf(c),
    };
    try {
      await deps.audit.appendAdmin(record);
    } catch {
      deps.log('error', 'admin action could not be audited', { action, outcome: record.outcome, secret: record.secret });
      // Its intent record is durable; the outcome is not: say so rather than answer 200 without a full record.
      return answer(c, 'AUDIT_UNAVAILABLE', refusal ? 'the audit log cannot be written' : 'the change may have been made (its intent is audited) but its outcome record could not be written; check the store and the audit log');
    }
    if (refusal) return answer(c, refusal.code, refusal.message);
    c.header('cache-control', 'no-store');
    return c.json(outcome!.result as object);
  };

  app.get(
    '/v1/admin/secrets',
    route('list', 'secrets:read', async () => {
      const { bindings, invalidBindings, revocations, revocationsProblem } = await deps.store.refresh();
      // Everything except the ciphertext, as keygate list --json.
      const rows = [...bindings.values()].sort((a, b) => a.secret.localeCompare(b.secret)).map(({ ciphertext: _c, ...rest }) => rest);
      return { result: { bindings: rows, invalidBindings: [...invalidBindings].sort(), revocations: revocationsProblem ? null : revocations }, secret: null };
    }),
  );

  app.put(
    '/v1/admin/secrets/:name',
    route('bind', 'secrets:write', async (c) => {
      const secret = secretParam(c);
      const body = await jsonBody(c);
      const known = ['value', 'allow', 'provider', 'kmsKeyId', 'mode', 'ttlSeconds', 'allowDebug', 'instances', 'instanceTag', 'add'];
      for (const k of Object.keys(body)) if (!known.includes(k)) throw new AdminApiError('BAD_REQUEST', `unknown field "${k}" (${known.join(', ')})`);
      const provider = (body.provider ?? 'local') as ProviderName;
      const p = deps.providers.get(provider);
      if (!p) throw new AdminApiError('BAD_REQUEST', `provider "${String(body.provider)}" is not configured on this broker`);
      if (!Array.isArray(body.allow) || body.allow.length === 0 || body.allow.length > 64) throw new AdminApiError('BAD_REQUEST', 'allow must be a non-empty list of {"pcrs": {...}} or {"baseline": NAME}');
      const snapshot = await deps.store.refresh();
      const rules = body.allow.map((r: unknown) => ruleOf(r, snapshot));
      const allow = rules.map((r) => r.rule);
      const instanceTag = instanceTagOf(body);
      if (body.ttlSeconds !== undefined && (!Number.isInteger(body.ttlSeconds) || (body.ttlSeconds as number) < 1)) throw new AdminApiError('BAD_REQUEST', 'ttlSeconds must be a positive integer');
      if (body.mode !== undefined && body.mode !== 'jwe' && body.mode !== 'kms-recipient') throw new AdminApiError('BAD_REQUEST', 'mode must be "jwe" or "kms-recipient"');
      if (body.kmsKeyId !== undefined && typeof body.kmsKeyId !== 'string') throw new AdminApiError('BAD_REQUEST', 'kmsKeyId must be a string');
      const value = valueOf(body);
      try {
        const binding = await bindSecret(deps.store, p, {
          secret,
          value,
          allow,
          provider,
          ...(body.kmsKeyId ? { kmsKeyId: body.kmsKeyId as string } : {}),
          ...(body.mode ? { mode: body.mode as ReleaseMode } : {}),
          ...(body.ttlSeconds !== undefined ? { ttlSeconds: body.ttlSeconds as number } : {}),
          allowDebug: body.allowDebug === true,
          instances: stringList(body, 'instances'),
          ...(instanceTag ? { instanceTag } : {}),
          addAllow: body.add === true,
        });
        const { ciphertext: _c, ...shown } = binding;
        return { result: { binding: shown, ...(await baselineStatus(rules)) }, versionAfter: binding.version, detail: { provider, rules: binding.allow.length } };
      } finally {
        value.fill(0);
      }
    }),
  );

  // keygate bind NAME --baseline B without a value: a rule added, the value and its version untouched.
  app.post(
    '/v1/admin/secrets/:name/rules',
    route('add-rule', 'secrets:write', async (c) => {
      const secret = secretParam(c);
      const resolved = ruleOf(await jsonBody(c), await deps.store.refresh());
      const { binding, added } = await addAllowRule(deps.store, secret, resolved.rule, undefined, new Date(deps.clock()));
      return {
        result: { binding: shownOf(binding), added, ...(await baselineStatus([resolved])) },
        versionAfter: binding.version,
        detail: { added, rules: binding.allow.length, ...(resolved.rule.baseline ? { baseline: resolved.rule.baseline } : {}) },
      };
    }),
  );

  app.post(
    '/v1/admin/secrets/:name/rotate',
    route('rotate', 'secrets:write', async (c) => {
      const secret = secretParam(c);
      const body = await jsonBody(c);
      if (Object.keys(body).some((k) => k !== 'value')) throw new AdminApiError('BAD_REQUEST', 'the body is {"value": ...} only');
      const value = valueOf(body);
      try {
        const binding = await rotateSecret(deps.store, deps.providers, secret, value, new Date(deps.clock()));
        return { result: { secret, version: binding.version }, versionAfter: binding.version };
      } finally {
        value.fill(0);
      }
    }),
  );

  app.delete(
    '/v1/admin/secrets/:name',
    route('unbind', 'secrets:write', async (c) => {
      const secret = secretParam(c);
      await unbindSecret(deps.store, secret);
      return { result: { secret, unbound: true }, versionAfter: null };
    }),
  );

  app.post(
    '/v1/admin/secrets/:name/revoke',
    route('revoke-secret', 'revocations:write', async (c) => {
      const secret = secretParam(c);
      const binding = await revokeSecret(deps.store, secret, new Date(deps.clock()));
      return { result: { secret, revoked: true, version: binding.version }, versionAfter: binding.version };
    }),
  );

  app.post(
    '/v1/admin/secrets/:name/unrevoke',
    route('unrevoke-secret', 'revocations:write', async (c) => {
      const secret = secretParam(c);
      const binding = await unrevokeSecret(deps.store, secret, new Date(deps.clock()));
      return { result: { secret, revoked: false, version: binding.version }, versionAfter: binding.version };
    }),
  );

  app.post(
    '/v1/admin/revocations',
    route('revoke-identities', 'revocations:write', async (c) => {
      const add = identities(await jsonBody(c));
      const revocations = await revokeIdentities(deps.store, add);
      return { result: { revocations }, secret: null, versionBefore: null, detail: { added: add } };
    }),
  );

  app.post(
    '/v1/admin/revocations/remove',
    route('unrevoke-identities', 'revocations:write', async (c) => {
      const remove = identities(await jsonBody(c));
      const revocations = await unrevokeIdentities(deps.store, remove);
      return { result: { revocations }, secret: null, versionBefore: null, detail: { removed: remove } };
    }),
  );

  app.put(
    '/v1/admin/baselines/:name',
    route('baseline-put', 'baselines:approve', async (c) => {
      const name = c.req.param('name') ?? '';
      const body = await jsonBody(c);
      const baseline = parseBaseline(body, 'body');
      if (baseline.name !== name) throw new AdminApiError('BAD_REQUEST', `the baseline in the body is named "${baseline.name}", not "${name}"`);
      const { baseline: stored, changed } = await putStoredBaseline(deps.store, baseline);
      return { result: { baseline: stored.name, approvals: stored.approvals.length, changed }, secret: null, versionBefore: null, detail: { baseline: stored.name, changed } };
    }),
  );

  app.post(
    '/v1/admin/baselines/:name/approvals',
    route('baseline-approve', 'baselines:approve', async (c) => {
      const name = c.req.param('name') ?? '';
      const body = await jsonBody(c);
      const approval: Approval = { kid: body.kid as string, jws: body.jws as string };
      const stored = deps.store.snapshot().baselines.get(name);
      if (!stored) throw new AdminApiError('BASELINE_NOT_FOUND', `no baseline "${name}" in the store`);
      // Validates the shape (kid, jws) with the baseline schema, then the signature under a configured approver key.
      const candidate = parseBaseline({ ...stored, approvals: [approval] }, 'body');
      if ((await countApprovals(candidate, deps.approverKeys)) !== 1) {
        throw new AdminApiError('BAD_REQUEST', 'the approval does not verify over this baseline under any configured adminKeys key');
      }
      // The same build (digest checked by the merge): only the approval is added, atomically.
      const { baseline, changed } = await putStoredBaseline(deps.store, candidate);
      return { result: { baseline: name, approvals: baseline.approvals.length, added: changed }, secret: null, versionBefore: null, detail: { baseline: name, approvalKid: approval.kid, added: changed } };
    }),
  );

  app.get(
    '/v1/admin/baselines',
    route('baseline-list', 'secrets:read', async () => {
      const baselines = await listBaselines(await deps.store.refresh(), deps.approverKeys, deps.approvalsRequired ?? 1);
      return { result: { adminKeys: deps.approverKeys.length, approvalsRequired: deps.approvalsRequired ?? 1, baselines }, secret: null, versionBefore: null };
    }),
  );

  app.get(
    '/v1/admin/audit/head',
    route('audit-head', 'audit:read', async () => {
      const head = deps.audit.head;
      if (!head) throw new AdminApiError('NOT_FOUND', 'this audit sink has no head');
      return { result: { seq: head.seq, headHash: head.prevHash }, secret: null, versionBefore: null };
    }),
  );

  app.notFound((c) => answer(c, 'NOT_FOUND', 'no such route'));
  app.onError((err, c) => {
    if (err instanceof AdminApiError) return answer(c, err.code, err.message);
    return answer(c, 'INTERNAL_ERROR', 'internal error');
  });
  return app;
}
