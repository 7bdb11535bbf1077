import { CodedError } from '../lib/coded-error.js';

/**
 * JSON.parse keeps the last of repeated object keys, so `{"names":["a"],
 * "names":["b"]}` means whatever the last parser in a chain of relays and
 * proxies decides. Request bodies must mean one thing: a repeated key (at any
 * depth, compared after unescaping, so "names" and "n\u0061mes" are the same
 * key) is refused, as the strict CBOR decoder already does for CBOR bodies.
 */

export class DuplicateKeyError extends CodedError<'DUPLICATE_KEY'> {
  override readonly name = 'DuplicateKeyError';
  constructor(readonly key: string) {
    super('DUPLICATE_KEY', `duplicate object key ${JSON.stringify(key)}`);
  }
}

/**
 * Parses JSON text like JSON.parse, refusing repeated object keys.
 *
 * @throws SyntaxError for text that is not JSON, DuplicateKeyError for a repeated key
 */
export function parseJsonStrict(text: string): unknown {
  const value: unknown = JSON.parse(text);
  // The text is valid JSON from here on, so the scan only has to find the keys.
  assertNoDuplicateKeys(text);
  return value;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

function assertNoDuplicateKeys(text: string): void {
  // One entry per open container: the keys seen so far for an object, null for an array.
  const open: Array<Set<string> | null> = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      const end = closingQuote(text, i);
      if (expectKey) {
        // A key without a backslash is its own text; one with escapes unescapes exactly as JSON.parse did.
        const raw = text.slice(i + 1, end);
        const key = raw.includes('\\') ? (JSON.parse(text.slice(i, end + 1)) as string) : raw;
        const keys = open[open.length - 1]!;
        if (keys.has(key)) throw new DuplicateKeyError(key);
        keys.add(key);
        expectKey = false;
      }
      i = end;
    } else if (c === 0x7b /* { */) {
      open.push(new Set());
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      open.push(null);
      expectKey = false;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      open.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = open[open.length - 1] instanceof Set;
    }
  }
}

/**
 * The index of the quote that closes the string opening at `start`, in valid JSON text. indexOf jumps
 * over a long string (a base64 document) far faster than a loop over its characters; a quote is escaped
 * when an odd number of backslashes precede it (they all lie inside the string, after `start`).
 */
function closingQuote(text: string, start: number): number {
  let end = text.indexOf('"', start + 1);
  for (;;) {
    // Unreachable after JSON.parse accepted the text; a guard, so a misuse can never loop forever.
    if (end < 0) throw new SyntaxError('unterminated string in JSON');
    let backslashes = 0;
    while (text.charCodeAt(end - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return end;
    end = text.indexOf('"', end + 1);
  }
}
