/**
 * One error base (issue 10, item 6): every error carries a stable `code` (and
 * its `cause`) on lib/coded-error.ts's CodedError; HTTP statuses are chosen
 * from the code at the HTTP boundary only; the agent's codes are a closed list.
 */
import { describe, expect, it } from 'vitest';
import { CodedError } from '../../lib/coded-error.js';
import { BROKER_ERROR_CODES, type BrokerErrorCode } from '../../broker/protocol/index.js';
import { HTTP_STATUS } from '../../broker/http-status.js';
import { BrokerError } from '../../broker/errors.js';
import { createBrokerApp, type BrokerAppDependencies } from '../../broker/server.js';
import { AttestationError } from '../../broker/verify/errors.js';
import { KmsUnavailableError, CiphertextError } from '../../broker/kms/provider.js';
import { SchemaError } from '../../broker/policy/schema.js';
import { UsageError } from '../../cli/errors.js';
import { AgentError, type AgentErrorCode } from '../../enclave-agent/index.js';

/** The statuses the API has always answered with (design.md section 2); a change here is a wire change. */
const DOCUMENTED: Record<string, number> = {
  MALFORMED_COSE: 400, UNSUPPORTED_ALG: 400, MALFORMED_PAYLOAD: 400, BAD_REQUEST: 400,
  CERT_CHAIN_INVALID: 401, UNTRUSTED_ROOT: 401, CERT_EXPIRED: 401, BAD_SIGNATURE: 401, DOC_EXPIRED: 401, NONCE_MISMATCH: 401,
  PCR_MISMATCH: 403, DEBUG_MODE: 403, UNKNOWN_SECRET: 403, POLICY_DENIED: 403, REVOKED: 403,
  NOT_FOUND: 404, METHOD_NOT_ALLOWED: 405, PAYLOAD_TOO_LARGE: 413, RATE_LIMITED: 429, QUARANTINED: 429,
  INTERNAL_ERROR: 500, SECRET_UNAVAILABLE: 500, KMS_UNAVAILABLE: 503, STORE_UNAVAILABLE: 503,
  // delegation (issue 14)
  DELEGATION_INVALID: 401, DELEGATION_EXPIRED: 401, DELEGATION_EXHAUSTED: 403, DELEGATION_REVOKED: 403, DELEGATION_NOT_ALLOWED: 403, AUDIENCE_MISMATCH: 403,
  // the credential gateway (broker/gateway)
  GATEWAY_TOKEN_INVALID: 401, CHANNEL_BINDING_INVALID: 401, ROUTE_DENIED: 403, BODY_TOO_LARGE: 403, BUDGET_EXCEEDED: 403, UPSTREAM_STATUS_DENIED: 403, UPSTREAM_UNAVAILABLE: 502,
  // Human approval (issue 14): 202 = accepted, nothing released, the request awaits approval.
  APPROVAL_PENDING: 202, APPROVAL_DENIED: 403, APPROVAL_EXPIRED: 403, APPROVAL_CONSUMED: 409,
};

/** An app whose release step refuses with `code`: the status comes from the HTTP layer, not from the error. */
function refusingApp(code: BrokerErrorCode): ReturnType<typeof createBrokerApp> {
  const deps = {
    release: { release: () => Promise.reject(new BrokerError(code, `refused: ${code}`)) },
    challenge: { issue: () => ({ nonce: new Uint8Array(32), expiresAt: 0 }) },
    metrics: { render: () => '' },
    brokerKey: {},
    maxBodyBytes: 1024,
    clock: () => 0,
    ready: () => Promise.resolve(),
  } as unknown as BrokerAppDependencies;
  return createBrokerApp(deps);
}

describe('one error base', () => {
  it('errors of every part are CodedErrors with their own name, code and cause', () => {
    const cause = new Error('lower level');
    const samples: Array<[CodedError, string, string]> = [
      [new BrokerError('REVOKED', 'x', { cause }), 'BrokerError', 'REVOKED'],
      [new AttestationError('PCR_MISMATCH', 'x', { cause }), 'AttestationError', 'PCR_MISMATCH'],
      [new KmsUnavailableError('x', { cause }), 'KmsUnavailableError', 'KMS_UNAVAILABLE'],
      [new CiphertextError('x', { cause }), 'CiphertextError', 'SECRET_UNAVAILABLE'],
      [new AgentError('BAD_RESPONSE', 'x', { cause }), 'AgentError', 'BAD_RESPONSE'],
    ];
    for (const [err, name, code] of samples) {
      expect(err).toBeInstanceOf(CodedError);
      expect([err.name, err.code, err.cause, err.message]).toEqual([name, code, cause, 'x']);
      expect(String(err)).toBe(`${name}: x`);
    }
    expect([new SchemaError('$.pcrs', 'must be an object').code, new UsageError('bad flag').code]).toEqual(['SCHEMA_INVALID', 'USAGE']);
  });

  it('a broker error carries no HTTP status', () => {
    expect('status' in new BrokerError('REVOKED', 'revoked')).toBe(false);
  });
});

describe('HTTP statuses at the boundary', () => {
  it('the status map covers exactly the broker codes, each with its documented 4xx/5xx status', () => {
    expect(Object.keys(HTTP_STATUS).sort()).toEqual([...BROKER_ERROR_CODES].sort());
    expect({ ...HTTP_STATUS }).toEqual(DOCUMENTED);
  });

  it.each([...BROKER_ERROR_CODES])('the server answers %s with its status and { error: { code, message } }', async (code) => {
    const res = await refusingApp(code).request('/v1/secrets', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ attestation: 'AAAA', names: ['db'] }),
    });
    expect(res.status).toBe(DOCUMENTED[code]);
    expect(await res.json()).toEqual({ error: { code, message: `refused: ${code}` } });
  });
});

describe('AgentErrorCode is a closed list', () => {
  it('takes the agent\'s own codes and every broker code, nothing else', () => {
    const own: AgentErrorCode[] = ['BROKER_UNREACHABLE', 'BAD_RESPONSE', 'UNTRUSTED_RESPONSE', 'STALE_RESPONSE', 'VERSION_ROLLBACK', 'NSM_ERROR', 'AGENT_CLOSED'];
    const passedThrough: AgentErrorCode[] = [...BROKER_ERROR_CODES];
    // @ts-expect-error a code on neither list does not compile (`npm run typecheck` compiles this file)
    const unknown: AgentErrorCode = 'SOMETHING_ELSE';
    // @ts-expect-error nor can an AgentError be raised with one
    const raised = new AgentError('NOT_A_CODE', 'x');
    expect(new Set([...own, ...passedThrough]).size).toBe(own.length + passedThrough.length);
    expect([unknown, raised.code]).toEqual(['SOMETHING_ELSE', 'NOT_A_CODE']);
  });
});
