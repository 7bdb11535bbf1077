import { fromHex } from '../broker/verify/bytes.js';
import { UsageError } from './errors.js';
import type { VerifyOptions } from '../broker/verify/index.js';
import { PCR_BYTE_LENGTHS } from '../lib/pcrs.js';

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Parses a duration such as `300` (seconds), `500ms`, `30s`, `5m`, `1h`, `2d`
 * into milliseconds.
 */
export function parseDuration(text: string, flag: string): number {
  const match = DURATION.exec(text.trim());
  if (!match) throw new UsageError(`${flag}: "${text}" is not a duration (e.g. 300, 30s, 5m, 1h)`);
  const ms = Number(match[1]) * UNIT_MS[match[2] ?? 's']!;
  if (!Number.isFinite(ms) || ms > Number.MAX_SAFE_INTEGER) throw new UsageError(`${flag}: "${text}" is too large`);
  return Math.round(ms);
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?$/;

/** Parses `--at`: epoch milliseconds or an ISO 8601 date/time (UTC unless an offset is given). */
export function parseInstant(text: string, flag: string): number {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) {
    const ms = Number(trimmed);
    if (!Number.isSafeInteger(ms)) throw new UsageError(`${flag}: "${text}" is out of range`);
    return ms;
  }
  if (ISO_8601.test(trimmed)) {
    // Date.parse reads a date-time without offset as local time; keygate means UTC.
    const withZone = /T/.test(trimmed) && !/(Z|[+-]\d{2}:\d{2})$/.test(trimmed) ? `${trimmed}Z` : trimmed;
    const ms = Date.parse(withZone);
    if (Number.isFinite(ms)) return ms;
  }
  throw new UsageError(`${flag}: "${text}" is neither epoch milliseconds nor an ISO 8601 time`);
}

/** Strict hex (even length, optional 0x prefix) to bytes. */
export function parseHex(text: string, flag: string): Uint8Array {
  const bytes = fromHex(text.trim().replace(/^0x/i, ''));
  if (!bytes) throw new UsageError(`${flag}: "${text}" is not an even-length hex string`);
  return bytes;
}

/** Parses repeated `--pcr N=HEX` values into the verifier's PCR requirements (its byte view). */
export function parsePcrRequirements(values: readonly string[]): NonNullable<VerifyOptions['pcrs']> {
  const out = new Map<number, Uint8Array>();
  for (const value of values) {
    const match = /^(\d{1,2})=(.*)$/s.exec(value);
    const index = match ? Number(match[1]) : NaN;
    if (!match || index > 31) throw new UsageError(`--pcr: "${value}" must look like N=HEX with N in 0..31`);
    if (out.has(index)) throw new UsageError(`--pcr: PCR${index} is given twice`);
    const bytes = parseHex(match[2]!, `--pcr ${index}`);
    if (!PCR_BYTE_LENGTHS.includes(bytes.length)) {
      throw new UsageError(`--pcr ${index}: a PCR is 32, 48 or 64 bytes, got ${bytes.length}`);
    }
    out.set(index, bytes);
  }
  return Object.fromEntries(out);
}
