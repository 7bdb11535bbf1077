import { ClusterChannelError, type WorkerChannel } from './channel.js';
import { NonceRegistryUnavailableError, type NonceRegistry, type NonceUse } from '../nonce/registry.js';

/**
 * A worker's view of the primary's memory registry (`keygate broker --workers N`): every worker consumes
 * through the primary, whose registry is synchronous, so of any number of concurrent uses of one nonce on
 * any workers at most one is `fresh`. No answer from the primary (gone, too slow) fails closed.
 */
export class PrimaryNonceRegistry implements NonceRegistry {
  constructor(private readonly channel: WorkerChannel) {}

  async consume(id: string, rememberUntil: number, now: number): Promise<NonceUse> {
    let answer;
    try {
      answer = await this.channel.ask({ op: 'nonce.consume', nonce: id, rememberUntil, now });
    } catch (err) {
      throw new NonceRegistryUnavailableError('the primary process holding the nonce registry did not answer', { cause: err, registryError: err instanceof ClusterChannelError ? err.name : 'Error' });
    }
    if (answer === 'fresh' || answer === 'used' || answer === 'busy') return answer;
    throw new NonceRegistryUnavailableError('the primary process answered a nonce consume with nonsense', { registryError: 'ClusterChannelError' });
  }

  /** The primary lives as long as the worker (its death disconnects the channel, which fails every request). */
  async check(): Promise<void> {}

  close(): void {}
}
