import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UsageError } from './errors.js';

/** Option definitions, as node:util parseArgs takes them. */
export type Options = NonNullable<ParseArgsConfig['options']>;
const HELP = { help: { type: 'boolean', short: 'h' } } as const;
type Config<O extends Options> = { args: string[]; options: O & typeof HELP; allowPositionals: true; strict: true };
/** What parseCommand returns for options `O`. */
export type Parsed<O extends Options> = ReturnType<typeof parseArgs<Config<O>>>;

/**
 * Strict option parsing shared by every command: unknown options, missing
 * values and surplus positionals are usage errors (exit 2); `--help`/`-h` is
 * always accepted.
 */
export function parseCommand<O extends Options>(argv: readonly string[], options: O, maxPositionals = 0): Parsed<O> {
  const config: Config<O> = { args: [...argv], options: { ...options, ...HELP }, allowPositionals: true, strict: true };
  let parsed: Parsed<O>;
  try {
    parsed = parseArgs(config);
  } catch (err) {
    throw new UsageError(parseErrorMessage(err as Error & { code?: string }));
  }
  if (!(parsed.values as { help?: boolean }).help && parsed.positionals.length > maxPositionals) {
    throw new UsageError(maxPositionals === 0 ? `unexpected argument "${parsed.positionals[0]}"` : `too many arguments: ${parsed.positionals.join(' ')}`);
  }
  return parsed;
}

/**
 * node:util's parse errors in the CLI's words: the flag, and what it needs. Its own texts quote
 * unevenly and suggest `--` (unknown options) or `--flag=-XYZ` (values): not what a user meant.
 */
function parseErrorMessage(err: Error & { code?: string }): string {
  const flag = /'(-{1,2}[^' <]+)/.exec(err.message)?.[1];
  if (!flag) return err.message;
  if (err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${flag}`;
  if (/does not take an argument/.test(err.message)) return `${flag} takes no value`;
  // node refuses `--flag -x` (a value that looks like a flag) as ambiguous: such a value goes after "=".
  if (/ambiguous/.test(err.message)) return `${flag} needs a value (one that starts with "-" is written ${flag}=VALUE)`;
  if (/argument missing/.test(err.message)) return `${flag} needs a value`;
  return err.message;
}
