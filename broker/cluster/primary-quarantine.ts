import { ClusterChannelError, type WorkerChannel } from './channel.js';
import type { QuarantineStore } from '../rate-limit.js';
import { QuarantineUnavailableError } from '../quarantine/store.js';

/**
 * A worker's view of the primary's memory quarantine (`keygate broker --workers N`): denials on every
 * worker count towards one total (each is sent to the primary), and an identity quarantined through one
 * worker is refused by all.
 *
 * The question asked on every release ("is this identity quarantined?") is answered from a mirror of the
 * primary's quarantines, not by a round trip to the primary (a round trip per release cost the primary and
 * the worker ~35 µs each). The mirror is as coherent as asking:
 * - it starts from the primary's snapshot (`load`, before the worker serves) and from then on the primary
 *   pushes every quarantine it starts, in order on the same pipe;
 * - the primary answers the denial that started a quarantine only once every other worker has acknowledged
 *   the push (applied first, acknowledged after), and kills a worker that does not acknowledge in time: so
 *   by the time that denial reaches its caller, every worker alive refuses the identity. A request racing
 *   with the denial could pass either way when asking too (its question could reach the primary first).
 * - no primary (gone, channel closed) or no snapshot yet: every question throws (fail closed), as before.
 * The mirror applies the same end-of-quarantine rules as the primary's Quarantine (expiry; a wall clock
 * stepped backwards does not stretch a quarantine beyond its length from now).
 */
export class PrimaryQuarantine implements QuarantineStore {
  readonly #until = new Map<string, number>();
  /** Pushes that arrived before the snapshot was applied (the same pipe, right behind its reply): applied after it. */
  #early: Array<[string, number]> | undefined = [];
  /** The latest time asked about: what a sweep of ended quarantines measures against. */
  #lastNow = 0;

  constructor(
    private readonly channel: WorkerChannel,
    private readonly quarantineMs: number,
    private readonly maxKeys = 100_000,
  ) {
    channel.onQuarantineSet((identity, until) => (this.#early ? this.#early.push([identity, until]) : this.#set(identity, until)));
  }

  /** Loads the primary's quarantines; questions before it has resolved throw. */
  async load(): Promise<void> {
    const answer = await this.#ask({ op: 'quarantine.snapshot' });
    if (!Array.isArray(answer) || !answer.every((e) => Array.isArray(e) && typeof e[0] === 'string' && typeof e[1] === 'number')) {
      throw new QuarantineUnavailableError('the primary process answered a quarantine snapshot with nonsense', { storeError: 'ClusterChannelError' });
    }
    for (const [identity, until] of answer as ReadonlyArray<readonly [string, number]>) this.#set(identity, until);
    for (const [identity, until] of this.#early ?? []) this.#set(identity, until);
    this.#early = undefined;
  }

  isQuarantined(identity: string, now: number): boolean {
    this.#usable();
    this.#lastNow = Math.max(this.#lastNow, now);
    let until = this.#until.get(identity);
    if (until === undefined) return false;
    if (until - now > this.quarantineMs) this.#until.set(identity, (until = now + this.quarantineMs));
    if (until > now) return true;
    this.#until.delete(identity);
    return false;
  }

  async recordDenial(identity: string, now: number): Promise<void> {
    this.#lastNow = Math.max(this.#lastNow, now);
    const answer = await this.#ask({ op: 'quarantine.deny', identity, now });
    // The primary's end of this identity's quarantine (null: none): this worker's own mirror, like the others', has it before the denial is answered.
    if (typeof answer === 'number') this.#set(identity, answer);
    else if (answer !== null) throw new QuarantineUnavailableError('the primary process answered a quarantine denial with nonsense', { storeError: 'ClusterChannelError' });
  }

  async check(): Promise<void> {
    this.#usable();
  }

  close(): void {}

  #usable(): void {
    if (this.#early) throw new QuarantineUnavailableError('the quarantine of the primary process is not loaded yet', { storeError: 'ClusterChannelError' });
    if (!this.channel.open) throw new QuarantineUnavailableError('the primary process holding the quarantine is gone', { storeError: 'ClusterChannelError' });
  }

  #set(identity: string, until: number): void {
    this.#until.set(identity, until);
    // Bounded by dropping ended quarantines only: never one the primary still holds (a mirror may refuse more, never less).
    if (this.#until.size > this.maxKeys) for (const [k, end] of this.#until) if (end <= this.#lastNow) this.#until.delete(k);
  }

  async #ask(req: Parameters<WorkerChannel['ask']>[0]): ReturnType<WorkerChannel['ask']> {
    try {
      return await this.channel.ask(req);
    } catch (err) {
      throw new QuarantineUnavailableError('the primary process holding the quarantine did not answer', { cause: err, storeError: err instanceof ClusterChannelError ? err.name : 'Error' });
    }
  }
}
