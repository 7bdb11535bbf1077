import type { AuditSink, DecisionRecord } from '../audit/sink.js';
import type { BindingStore } from '../store/store.js';
import type { Logger } from '../log.js';
import type { ApprovalGate } from './gate.js';

/** How often a broker closes and audits approval requests that ended while nobody asked. */
export const DEFAULT_APPROVAL_SWEEP_MS = 30_000;

/**
 * Runs `gate.sweep` every `intervalMs`: grants on open requests are audited (then marked audited), and
 * requests denied or past their window (or whose binding changed) are closed and their denial or expiry
 * audited, even if the enclave never asks again. With replicas each broker sweeps; the conditional close
 * lets one of them report each ending. Grants are audited at least once (a race or a crash between the
 * record and its mark may audit one twice; never zero times).
 */
export function startApprovalSweeper(deps: { gate: ApprovalGate; store: BindingStore; audit: AuditSink; clock: () => number; log: Logger; intervalMs?: number }): { stop(): void; runOnce(): Promise<void> } {
  let running: Promise<void> | undefined;
  const runOnce = (): Promise<void> =>
    (running ??= (async () => {
      const now = deps.clock();
      const snapshot = await deps.store.refresh();
      // A revocation list that cannot be loaded closes nothing by itself (releases are refused meanwhile anyway).
      const { events, acknowledge } = await deps.gate.sweep(snapshot.bindings, now, snapshot.revocationsProblem ? undefined : snapshot.revocations);
      for (const e of events) {
        const record: DecisionRecord = {
          time: new Date(now).toISOString(),
          decision: 'approval',
          code: `APPROVAL_${e.event.toUpperCase()}`,
          secret: e.secret,
          version: e.version,
          moduleId: e.identity.moduleId,
          pcrs: { 0: e.identity.pcr0, 1: e.identity.pcr1, 2: e.identity.pcr2 },
          docSha256: null,
          nonce: null,
          client: 'approval-sweep',
          latencyMs: 0,
          approval: { id: e.id, event: e.event, approvers: e.approvers, expiresAt: e.expiresAt, ...(e.at ? { at: e.at } : {}) },
        };
        await deps.audit.append(record);
      }
      await acknowledge();
    })()
      .catch((err: unknown) => deps.log('warn', 'approval sweep failed; it runs again later', { error: err instanceof Error ? err.message : String(err) }))
      .finally(() => {
        running = undefined;
      }));
  const timer = setInterval(() => void runOnce(), deps.intervalMs ?? DEFAULT_APPROVAL_SWEEP_MS);
  timer.unref();
  return { stop: () => clearInterval(timer), runOnce };
}
