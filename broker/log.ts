/**
 * Structured one-line JSON logs (pino) on stderr. Never pass secret values, attestation bytes or tokens here.
 *
 * Call sites keep the small `log(level, message, fields)` interface; pino does the formatting, level
 * filtering and redaction. Each line: `{"level":"info","time":"<ISO 8601>","pid":N,"message":"...",...fields}`.
 */
import { pino, stdTimeFunctions, type DestinationStream } from 'pino';
import { CodedError } from '../lib/coded-error.js';

export type LogLevel = 'info' | 'warn' | 'error';
export type Logger = (level: LogLevel, message: string, fields?: Record<string, unknown>) => void;

/** The lowest level written (`silent` writes nothing). */
export type LogThreshold = 'debug' | 'info' | 'warn' | 'error' | 'silent';
export const LOG_THRESHOLDS: readonly LogThreshold[] = ['debug', 'info', 'warn', 'error', 'silent'];
/** Environment variable that overrides the configured `logLevel`. */
export const LOG_LEVEL_ENV = 'KEYGATE_LOG_LEVEL';

/** A log level that is not one of LOG_THRESHOLDS. */
export class LogLevelError extends CodedError<'CONFIG_INVALID'> {
  override readonly name = 'LogLevelError';
  constructor(message: string) {
    super('CONFIG_INVALID', message);
  }
}

export function isLogThreshold(value: unknown): value is LogThreshold {
  return typeof value === 'string' && (LOG_THRESHOLDS as readonly string[]).includes(value);
}

/**
 * The level in force: `KEYGATE_LOG_LEVEL` when set (so an operator can turn a running deployment's
 * logging up or down without editing its config), else the configured one, else `info`.
 *
 * @throws LogLevelError when the environment variable holds something else
 */
export function effectiveLogLevel(configured: LogThreshold | undefined, env: NodeJS.ProcessEnv = process.env): LogThreshold {
  const fromEnv = env[LOG_LEVEL_ENV];
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!isLogThreshold(fromEnv)) throw new LogLevelError(`${LOG_LEVEL_ENV}="${fromEnv}" is not a log level (${LOG_THRESHOLDS.join(', ')})`);
    return fromEnv;
  }
  return configured ?? 'info';
}

/**
 * Field names whose values are censored wherever a caller passes them by mistake (defence in depth:
 * call sites already never log values, tokens or documents).
 */
const REDACTED_FIELDS = ['value', 'token', 'authorization', 'attestation', 'document', 'plaintext', 'privateKey'];

export interface LoggerOptions {
  readonly level?: LogThreshold;
  /** Where lines go. Default: stderr, written synchronously (a line is out before a crash or exit). */
  readonly destination?: DestinationStream;
}

/** A Logger backed by pino. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const p = pino(
    {
      level: options.level ?? 'info',
      base: { pid: process.pid },
      timestamp: stdTimeFunctions.isoTime,
      // Levels as names ("warn"), as this log has always written them, not pino's numbers.
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACTED_FIELDS, censor: '[redacted]' },
    },
    options.destination ?? pino.destination({ dest: 2, sync: true }),
  );
  // The message leads the fields (as this log always wrote it, and as tests and log queries match it); a field
  // of the same name replaces it, as before.
  return (level, message, fields = {}) => p[level]({ message, ...fields });
}

let defaultLogger: Logger | undefined;

/** The default logger (stderr, level from KEYGATE_LOG_LEVEL or info), created on first use. */
export const stderrLogger: Logger = (level, message, fields) => {
  defaultLogger ??= createLogger({ level: isLogThreshold(process.env[LOG_LEVEL_ENV]) ? (process.env[LOG_LEVEL_ENV] as LogThreshold) : 'info' });
  defaultLogger(level, message, fields);
};

export const silentLogger: Logger = () => {};
