import { BrokerError } from '../errors.js';
import { isDelegationAudience } from '../protocol/index.js';
import type { DelegationRequest } from './gate.js';

/**
 * The delegation request's own members (`ttlSeconds`, `audience`, `maxUses`) from a release-shaped body
 * whose `attestation` and `names` are read already: shape only (limits are the gate's).
 *
 * @throws BrokerError BAD_REQUEST
 */
export function parseDelegationRequest(names: readonly string[], field: (key: string) => unknown): DelegationRequest {
  const ttlSeconds = field('ttlSeconds');
  const maxUses = field('maxUses');
  const audience = normaliseAudience(field('audience'));
  if (typeof ttlSeconds !== 'number' || !Number.isSafeInteger(ttlSeconds) || ttlSeconds < 1) throw new BrokerError('BAD_REQUEST', 'ttlSeconds must be a positive integer');
  if (typeof maxUses !== 'number' || !Number.isSafeInteger(maxUses) || maxUses < 1) throw new BrokerError('BAD_REQUEST', 'maxUses must be a positive integer');
  if (!isDelegationAudience(audience)) throw new BrokerError('BAD_REQUEST', 'audience must be { pcrs: { "0", "1", "2" (and optionally "3", "4", "8"): lower-case hex } } or { baseline: NAME }');
  return { names, ttlSeconds, maxUses, audience };
}

/** A CBOR body decodes maps as Map: the audience is read as the same plain object a JSON body gives. */
function normaliseAudience(value: unknown): unknown {
  if (!(value instanceof Map)) return value;
  if ([...value.keys()].some((k) => typeof k !== 'string')) return undefined;
  // Object.fromEntries defines own members: a "__proto__" key stays a (refused) key, never the prototype.
  return Object.fromEntries([...value].map(([k, v]) => [k, v instanceof Map ? Object.fromEntries([...v].map(([i, x]) => [String(i), x])) : v]));
}
