import type { NonceRegistry } from '../nonce/registry.js';
import type { OpenedQuarantine } from '../quarantine/open-quarantine.js';
import type { WorkerChannel } from './channel.js';
import { PrimaryNonceRegistry } from './primary-nonces.js';
import { PrimaryQuarantine } from './primary-quarantine.js';

/** What a worker of `keygate broker --workers N` uses of the primary's instead of its own (memory kinds only). */
export interface PrimaryParts {
  readonly nonces: NonceRegistry;
  readonly quarantine: OpenedQuarantine;
}

/** The one place that builds a worker's views of the primary's nonce registry and quarantine. */
export function openPrimaryParts(channel: WorkerChannel): PrimaryParts {
  return { nonces: new PrimaryNonceRegistry(channel), quarantine: new PrimaryQuarantine(channel) };
}
