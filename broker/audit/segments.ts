import { readdir } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';

/**
 * Audit file naming. The broker always appends to the live file (e.g.
 * `audit.jsonl`); when it would grow past its size limit it is renamed to the
 * next numbered segment beside it (`audit.000001.jsonl`, `audit.000002.jsonl`,
 * ...) and a new live file is started. The hash chain (seq, prevHash) runs on
 * across files, so the whole log, in order, is: the segments by number, then
 * the live file.
 */
export function segmentPath(live: string, n: number): string {
  const ext = extname(live);
  const stem = basename(live, ext);
  return join(dirname(live), `${stem}.${String(n).padStart(6, '0')}${ext}`);
}

function segmentPattern(live: string): RegExp {
  const ext = extname(live);
  const stem = basename(live, ext);
  const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${esc(stem)}\\.(\\d{6,})${esc(ext)}$`);
}

/** Segment files of `live`, oldest first (by number). */
export async function listSegments(live: string): Promise<Array<{ path: string; n: number }>> {
  let entries: string[];
  try {
    entries = await readdir(dirname(live));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const pattern = segmentPattern(live);
  return entries
    .map((name) => ({ name, m: pattern.exec(name) }))
    .filter((e): e is { name: string; m: RegExpExecArray } => e.m !== null)
    .map((e) => ({ path: join(dirname(live), e.name), n: Number(e.m[1]) }))
    .sort((a, b) => a.n - b.n);
}

/**
 * The audit files in a directory, in chain order: `X.NNNNNN.jsonl` by number,
 * then `X.jsonl`. Exactly one log (one `X`) may live there.
 */
export async function auditFilesIn(dir: string): Promise<string[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.jsonl'));
  const stems = new Set(names.map((n) => n.replace(/(\.\d{6,})?\.jsonl$/, '')));
  if (stems.size > 1) throw new Error(`${dir} holds more than one audit log (${[...stems].sort().join(', ')}); name the files instead`);
  if (stems.size === 0) return [];
  const live = join(dir, `${[...stems][0]!}.jsonl`);
  const files = (await listSegments(live)).map((s) => s.path);
  if (names.includes(basename(live))) files.push(live);
  return files;
}

/**
 * Every audit log in a directory, each in chain order (see auditFilesIn), by name: the per-worker
 * chains of `keygate broker --workers N` (`audit.w1.jsonl`, `audit.w2.jsonl`, ... and their segments),
 * and a single-process `audit.jsonl` if one was written too. Each is its own hash chain.
 */
export async function auditLogsIn(dir: string): Promise<Array<{ log: string; files: string[] }>> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.jsonl'));
  const stems = [...new Set(names.map((n) => n.replace(/(\.\d{6,})?\.jsonl$/, '')))].sort();
  const logs: Array<{ log: string; files: string[] }> = [];
  for (const stem of stems) {
    const live = join(dir, `${stem}.jsonl`);
    const files = (await listSegments(live)).map((s) => s.path);
    if (names.includes(`${stem}.jsonl`)) files.push(live);
    logs.push({ log: `${stem}.jsonl`, files });
  }
  return logs;
}
