/**
 * A worker's mirror of the primary's quarantine (`keygate broker --workers N`): the release path asks it
 * without a round trip, so it must never be more lenient than asking the primary: fail closed before its
 * snapshot and once the primary is gone, apply every push before acknowledging it, lose no push that
 * arrives right behind the snapshot, and follow the primary's end-of-quarantine rules.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { WorkerChannel, type ClusterRequest, type ClusterValue, type IpcEndpoint } from '../../broker/cluster/channel.js';
import { PrimaryQuarantine } from '../../broker/cluster/primary-quarantine.js';
import { QuarantineUnavailableError } from '../../broker/quarantine/store.js';

const MINUTE = 60_000;

/** The worker's end of an IPC pipe; `answer` plays the primary, `sent` is everything the worker sent. */
class FakePrimary extends EventEmitter implements IpcEndpoint {
  connected = true;
  readonly sent: unknown[] = [];
  constructor(private readonly answer: (req: ClusterRequest) => ClusterValue) {
    super();
  }
  send(message: unknown): boolean {
    this.sent.push(message);
    const m = message as { kg?: string; id?: number; req?: ClusterRequest };
    // Like node's IPC: what arrives is emitted on a later tick.
    if (m.kg === 'req') process.nextTick(() => this.emit('message', { kg: 'rep', id: m.id, ok: true, value: this.answer(m.req!) }));
    return true;
  }
  push(identity: string, until: number, seq = 1): void {
    this.emit('message', { kg: 'qset', seq, identity, until });
  }
  gone(): void {
    this.connected = false;
    this.emit('disconnect');
  }
}

function mirrorOf(answer: (req: ClusterRequest) => ClusterValue = () => []): { primary: FakePrimary; mirror: PrimaryQuarantine } {
  const primary = new FakePrimary(answer);
  return { primary, mirror: new PrimaryQuarantine(new WorkerChannel(primary, 1_000), 5 * MINUTE) };
}

function code(f: () => unknown): string | undefined {
  try {
    f();
    return undefined;
  } catch (err) {
    return err instanceof QuarantineUnavailableError ? err.code : String(err);
  }
}

describe('a worker quarantine mirror', () => {
  it('refuses to answer (QUARANTINE_UNAVAILABLE) before the snapshot is loaded, then answers from it', async () => {
    const { mirror } = mirrorOf(() => [['held', 10 * MINUTE]]);
    expect(code(() => mirror.isQuarantined('held', 0))).toBe('QUARANTINE_UNAVAILABLE');
    await expect(mirror.check()).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE' });
    await mirror.load();
    expect(mirror.isQuarantined('held', MINUTE)).toBe(true);
    expect(mirror.isQuarantined('other', MINUTE)).toBe(false);
    await expect(mirror.check()).resolves.toBeUndefined();
  });

  it('applies a pushed quarantine before acknowledging it', async () => {
    const { primary, mirror } = mirrorOf();
    await mirror.load();
    let appliedAtAck: boolean | undefined;
    const send = primary.send.bind(primary);
    primary.send = (m: unknown): boolean => {
      if ((m as { kg?: string }).kg === 'qack') appliedAtAck = mirror.isQuarantined('x', MINUTE);
      return send(m);
    };
    primary.push('x', 6 * MINUTE, 7);
    expect(appliedAtAck).toBe(true);
    expect(primary.sent).toContainEqual({ kg: 'qack', seq: 7 });
  });

  it('keeps a push that arrives right behind the snapshot answer (same tick), applied after the snapshot', async () => {
    const { primary, mirror } = mirrorOf();
    const send = primary.send.bind(primary);
    primary.send = (m: unknown): boolean => {
      const r = send(m);
      // The primary answered the snapshot, then started a quarantine: both emitted before the worker's continuation runs.
      if ((m as { req?: { op?: string } }).req?.op === 'quarantine.snapshot') process.nextTick(() => primary.push('late', 6 * MINUTE));
      return r;
    };
    await mirror.load();
    expect(mirror.isQuarantined('late', MINUTE)).toBe(true);
  });

  it('a denial takes the primary’s end of the quarantine from its answer (none: nothing held)', async () => {
    let until: number | null = null;
    const { mirror } = mirrorOf((req) => (req.op === 'quarantine.deny' ? until : []));
    await mirror.load();
    await mirror.recordDenial('x', MINUTE);
    expect(mirror.isQuarantined('x', MINUTE)).toBe(false);
    until = 6 * MINUTE;
    await mirror.recordDenial('x', MINUTE);
    expect(mirror.isQuarantined('x', MINUTE)).toBe(true);
  });

  it('ends a quarantine at its end, and a clock stepped backwards does not stretch it beyond its length from now', async () => {
    const { mirror } = mirrorOf(() => [['a', 10 * MINUTE], ['b', 100 * MINUTE]]);
    await mirror.load();
    expect(mirror.isQuarantined('a', 10 * MINUTE - 1)).toBe(true);
    expect(mirror.isQuarantined('a', 10 * MINUTE)).toBe(false);
    // `b` ends 100 min from the epoch; asked at 0 (a clock far behind), it is held 5 min from now, not 100.
    expect(mirror.isQuarantined('b', 0)).toBe(true);
    expect(mirror.isQuarantined('b', 5 * MINUTE)).toBe(false);
  });

  it('fails closed (QUARANTINE_UNAVAILABLE) once the primary is gone, for questions and denials alike', async () => {
    const { primary, mirror } = mirrorOf();
    await mirror.load();
    primary.gone();
    expect(code(() => mirror.isQuarantined('x', MINUTE))).toBe('QUARANTINE_UNAVAILABLE');
    await expect(mirror.recordDenial('x', MINUTE)).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE' });
    await expect(mirror.check()).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE' });
  });

  it('refuses a snapshot that is not a list of (identity, end) pairs', async () => {
    const { mirror } = mirrorOf(() => 'nonsense');
    await expect(mirror.load()).rejects.toMatchObject({ code: 'QUARANTINE_UNAVAILABLE' });
    expect(code(() => mirror.isQuarantined('x', MINUTE))).toBe('QUARANTINE_UNAVAILABLE');
  });
});
