/**
 * The version to reserve when a binding whose document fails validation is
 * unbound: its `version` when that still reads as one; otherwise the current
 * time in milliseconds, above anything a history of +1 rotations can have
 * reached, so a later bind never repeats a version an agent may have seen.
 * Shared by every store backend.
 */
export function versionToReserve(document: string | undefined, now: number = Date.now()): number {
  try {
    const version = (JSON.parse(document ?? '') as { version?: unknown }).version;
    if (typeof version === 'number' && Number.isSafeInteger(version) && version >= 1) return version;
  } catch {
    // unreadable: fall through
  }
  return now;
}
