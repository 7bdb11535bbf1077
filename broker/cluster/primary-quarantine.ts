import { ClusterChannelError, type WorkerChannel } from './channel.js';
import type { QuarantineStore } from '../rate-limit.js';
import { QuarantineUnavailableError } from '../quarantine/store.js';

/**
 * A worker's view of the primary's memory quarantine (`keygate broker --workers N`): denials on every
 * worker count towards one total, and an identity quarantined through one worker is refused by all.
 * Every question goes to the primary (no local copy that could lag); no answer fails closed.
 */
export class PrimaryQuarantine implements QuarantineStore {
  constructor(private readonly channel: WorkerChannel) {}

  async isQuarantined(identity: string, now: number): Promise<boolean> {
    const answer = await this.#ask({ op: 'quarantine.is', identity, now });
    if (typeof answer !== 'boolean') throw new QuarantineUnavailableError('the primary process answered a quarantine question with nonsense', { storeError: 'ClusterChannelError' });
    return answer;
  }

  async recordDenial(identity: string, now: number): Promise<void> {
    await this.#ask({ op: 'quarantine.deny', identity, now });
  }

  async #ask(req: Parameters<WorkerChannel['ask']>[0]): ReturnType<WorkerChannel['ask']> {
    try {
      return await this.channel.ask(req);
    } catch (err) {
      throw new QuarantineUnavailableError('the primary process holding the quarantine did not answer', { cause: err, storeError: err instanceof ClusterChannelError ? err.name : 'Error' });
    }
  }

  async check(): Promise<void> {}

  close(): void {}
}
