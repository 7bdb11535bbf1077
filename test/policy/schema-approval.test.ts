// The `approval` section of a binding (human approval, issue 14): k-of-n Ed25519 approvers and a window.
// A policy the schema lets through decides whose grants release a secret, so each bound is checked on
// both sides, approver keys must be public Ed25519 keys whose kid is their own RFC 7638 thumbprint
// (cross-checked with jose), and every refusal names its exact path.
import { describe, expect, it } from 'vitest';
import { bindingDoc, expectRefused, type Doc } from './schema-support.js';
import { generateKeyPairSync } from 'node:crypto';
import { calculateJwkThumbprint } from 'jose';
import {
  MAX_APPROVAL_WINDOW_SECONDS,
  MAX_APPROVERS,
  MIN_APPROVAL_WINDOW_SECONDS,
  ed25519Thumbprint,
  parseApprovalPolicy,
  parseBinding,
} from '../../broker/policy/schema.js';

type Approver = { kid: string; jwk: { kty: string; crv: string; x: string } };


/** A real Ed25519 public key as an approver entry. */
function newApprover(): Approver {
  const x = (generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' }) as { x: string }).x;
  return { kid: ed25519Thumbprint(x), jwk: { kty: 'OKP', crv: 'Ed25519', x } };
}

const KEYS: readonly Approver[] = Array.from({ length: MAX_APPROVERS + 1 }, newApprover);

function policy(n = 3, extra: Doc = {}): Doc {
  return { required: 2, approvers: KEYS.slice(0, n).map((k) => structuredClone(k)), windowSeconds: 3600, ...extra };
}

const binding = (extra: Doc = {}): Doc => bindingDoc('db-password', extra);


/** The first approver with its fields replaced. */
const withApprover = (approver: Doc): Doc => policy(2, { approvers: [approver, structuredClone(KEYS[1]!)] });
const withJwk = (jwk: Doc): Doc => withApprover({ kid: KEYS[0]!.kid, jwk: { ...KEYS[0]!.jwk, ...jwk } });

describe('ed25519Thumbprint', () => {
  it('is the RFC 7638 thumbprint jose computes (SHA-256, base64url)', async () => {
    for (const k of KEYS.slice(0, 4)) expect(k.kid).toBe(await calculateJwkThumbprint(k.jwk, 'sha256'));
  });

  it('matches the RFC 8037 appendix A.3 example', () => {
    expect(ed25519Thumbprint('11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo')).toBe('kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k');
  });
});

describe('parseApprovalPolicy', () => {
  it('bounds: at most 16 approvers, a window of 1 minute .. 7 days', () => {
    expect(MAX_APPROVERS).toBe(16);
    expect(MIN_APPROVAL_WINDOW_SECONDS).toBe(60);
    expect(MAX_APPROVAL_WINDOW_SECONDS).toBe(604_800);
  });

  it('returns exactly the validated policy', () => {
    expect(parseApprovalPolicy(policy())).toStrictEqual(policy());
  });

  it('names the path given by the caller, and "approval" by default', () => {
    expectRefused(() => parseApprovalPolicy(policy(3, { required: 0 })), 'approval.required');
    expectRefused(() => parseApprovalPolicy(policy(3, { required: 0 }), 'b.approval'), 'b.approval.required');
  });

  it.each([null, undefined, [], '2-of-3', 2])('refuses a non-object %j', (v) => {
    expectRefused(() => parseApprovalPolicy(v), 'approval');
  });

  it.each(['k', 'n', 'window', 'Required'])('refuses the unknown field %s', (field) => {
    expectRefused(() => parseApprovalPolicy(policy(3, { [field]: 1 })), `approval.${field}`);
  });

  it.each(['required', 'approvers', 'windowSeconds'])('requires %s', (field) => {
    const doc = policy();
    delete doc[field];
    expectRefused(() => parseApprovalPolicy(doc), `approval.${field}`);
  });

  describe('approvers: 1..16 distinct public Ed25519 keys', () => {
    it.each([1, 2, MAX_APPROVERS])('accepts %d approvers', (n) => {
      expect(parseApprovalPolicy(policy(n, { required: 1 })).approvers).toStrictEqual(KEYS.slice(0, n));
    });

    it.each([
      ['none', []],
      ['17', KEYS.slice(0, MAX_APPROVERS + 1)],
      ['not a list', KEYS[0]],
      ['null', null],
    ])('refuses %s', (_name, approvers) => {
      expectRefused(() => parseApprovalPolicy(policy(3, { approvers })), 'approval.approvers');
    });

    it('refuses the same key twice', () => {
      expectRefused(() => parseApprovalPolicy(policy(3, { required: 1, approvers: [KEYS[0], KEYS[1], KEYS[0]] })), 'approval.approvers');
      expectRefused(() => parseApprovalPolicy(policy(3, { required: 1, approvers: [KEYS[2], KEYS[2]] })), 'approval.approvers');
    });

    it('names the approver at fault', () => {
      expectRefused(() => parseApprovalPolicy(policy(3, { approvers: [KEYS[0], KEYS[1], 'alice'] })), 'approval.approvers[2]');
      expectRefused(() => parseApprovalPolicy(policy(3, { approvers: [KEYS[0], { ...KEYS[1], kid: KEYS[0]!.kid }] })), 'approval.approvers[1].kid');
    });

    it.each([
      ['unknown field', { ...KEYS[0], alg: 'EdDSA' }, 'approval.approvers[0].alg'],
      ['no jwk', { kid: KEYS[0]!.kid }, 'approval.approvers[0].jwk'],
      ['jwk not an object', { kid: KEYS[0]!.kid, jwk: 'key' }, 'approval.approvers[0].jwk'],
      ['no kid', { jwk: KEYS[0]!.jwk }, 'approval.approvers[0].kid'],
      ['kid not a string', { kid: 7, jwk: KEYS[0]!.jwk }, 'approval.approvers[0].kid'],
      ['kid a label', { kid: 'alice', jwk: KEYS[0]!.jwk }, 'approval.approvers[0].kid'],
      ['kid of another key', { kid: KEYS[2]!.kid, jwk: KEYS[0]!.jwk }, 'approval.approvers[0].kid'],
      ['kid with padding', { kid: `${KEYS[0]!.kid}=`, jwk: KEYS[0]!.jwk }, 'approval.approvers[0].kid'],
    ])('refuses an approver: %s', (_name, approver, path) => {
      expectRefused(() => parseApprovalPolicy(withApprover(approver as Doc)), path);
    });

    it.each([
      ['a private key (d)', { d: KEYS[3]!.jwk.x }, 'approval.approvers[0].jwk.d'],
      ['alg', { alg: 'EdDSA' }, 'approval.approvers[0].jwk.alg'],
      ['kty EC', { kty: 'EC' }, 'approval.approvers[0].jwk'],
      ['kty okp', { kty: 'okp' }, 'approval.approvers[0].jwk'],
      ['crv X25519', { crv: 'X25519' }, 'approval.approvers[0].jwk'],
      ['crv Ed448', { crv: 'Ed448' }, 'approval.approvers[0].jwk'],
      ['no kty', { kty: undefined }, 'approval.approvers[0].jwk'],
      ['no crv', { crv: undefined }, 'approval.approvers[0].jwk'],
      ['no x', { x: undefined }, 'approval.approvers[0].jwk.x'],
      ['x a number', { x: 7 }, 'approval.approvers[0].jwk.x'],
      ['x of 42 characters', { x: KEYS[0]!.jwk.x.slice(1) }, 'approval.approvers[0].jwk.x'],
      ['x of 44 characters', { x: `${KEYS[0]!.jwk.x}A` }, 'approval.approvers[0].jwk.x'],
      ['x padded', { x: `${KEYS[0]!.jwk.x.slice(1)}=` }, 'approval.approvers[0].jwk.x'],
      ['x in base64 (+)', { x: `+${KEYS[0]!.jwk.x.slice(1)}` }, 'approval.approvers[0].jwk.x'],
      ['x in base64 (/)', { x: `${KEYS[0]!.jwk.x.slice(1)}/` }, 'approval.approvers[0].jwk.x'],
      ['x with a space', { x: ` ${KEYS[0]!.jwk.x.slice(1)}` }, 'approval.approvers[0].jwk.x'],
      // 43 characters carry 2 spare bits: a spelling with them set decodes to a key whose canonical spelling differs.
      ['x not canonical (spare bits set)', { x: `${KEYS[0]!.jwk.x.slice(0, 42)}Z` }, 'approval.approvers[0].jwk.x'],
    ])('refuses a jwk: %s', (_name, jwk, path) => {
      expectRefused(() => parseApprovalPolicy(withJwk(jwk)), path);
    });

    it('accepts x over the whole base64url alphabet (kid = its thumbprint) and returns only kty, crv and x', () => {
      // The last of 43 characters carries 2 spare bits, which must be zero (canonical: A, E, ..., w, 0, 4, 8).
      for (const x of ['AZaz09_-'.padEnd(43, 'A'), `${'Z'.repeat(42)}A`, `${'z'.repeat(42)}w`, `${'9'.repeat(42)}8`, `${'_'.repeat(42)}4`, `${'-'.repeat(42)}E`, `${'Q'.repeat(42)}0`]) {
        const approver = { kid: ed25519Thumbprint(x), jwk: { x, crv: 'Ed25519', kty: 'OKP' } };
        expect(parseApprovalPolicy(policy(1, { required: 1, approvers: [approver] })).approvers).toStrictEqual([
          { kid: ed25519Thumbprint(x), jwk: { kty: 'OKP', crv: 'Ed25519', x } },
        ]);
      }
    });
  });

  describe('required: 1 .. number of approvers', () => {
    it.each([
      [1, 1],
      [1, 3],
      [3, 3],
      [16, 16],
    ])('accepts %d of %d', (required, n) => {
      expect(parseApprovalPolicy(policy(n, { required })).required).toBe(required);
    });
    it.each([
      [0, 3],
      [-1, 3],
      [4, 3],
      [2, 1],
      [17, 16],
      [1.5, 3],
      ['2', 3],
      [null, 3],
    ])('refuses %j of %d', (required, n) => {
      expectRefused(() => parseApprovalPolicy(policy(n, { required })), 'approval.required');
    });
  });

  describe('windowSeconds: 60 .. 604800', () => {
    it.each([60, 61, 604_799, 604_800])('accepts %d', (w) => {
      expect(parseApprovalPolicy(policy(3, { windowSeconds: w })).windowSeconds).toBe(w);
    });
    it.each([59, 0, -60, 604_801, 90.5, '3600', null])('refuses %j', (w) => {
      expectRefused(() => parseApprovalPolicy(policy(3, { windowSeconds: w })), 'approval.windowSeconds');
    });
  });
});

describe('a binding with an approval section', () => {
  it('is parsed with the policy', () => {
    expect(parseBinding(binding({ approval: policy() }))).toStrictEqual(binding({ approval: policy() }));
  });

  it('has no approval key when the section is absent', () => {
    expect('approval' in parseBinding(binding())).toBe(false);
  });

  it('names the approval field at fault under the binding path', () => {
    expectRefused(() => parseBinding(binding({ approval: policy(3, { required: 4 }) })), 'binding.approval.required');
    expectRefused(() => parseBinding(binding({ approval: null })), 'binding.approval');
    expectRefused(() => parseBinding(binding({ approval: policy(3, { windowSeconds: 1 }) }), 's["x"]'), 's["x"].approval.windowSeconds');
  });

  it('cannot be combined with inject (gateway calls are not gated by approvers)', () => {
    const inject = {
      upstream: 'https://api.example.com',
      header: 'authorization',
      template: 'Bearer {value}',
      routes: ['POST /v1/chat/completions'],
      maxBodyBytes: 1024,
      budget: { requests: 10, windowSeconds: 60 },
    };
    expectRefused(() => parseBinding(binding({ approval: policy(), inject })), 'binding.inject');
    expect(parseBinding(binding({ inject })).inject).toStrictEqual(inject);
  });
});
