import { createReadStream } from 'node:fs';
import { UsageError } from './errors.js';
import { CodedError } from '../lib/coded-error.js';
import { fromHex } from '../broker/verify/bytes.js';

/** Where a command reads from; injectable so tests need no real stdin. */
export interface InputSource {
  /** Standard input as a byte stream (read only as far as the caller's limit). */
  stdin(): AsyncIterable<Uint8Array>;
}

/** The input holds more than the command accepts; reading stopped there. */
export class InputTooLargeError extends CodedError<'INPUT_TOO_LARGE'> {
  override readonly name = 'InputTooLargeError';
  constructor(readonly maxBytes: number) {
    super('INPUT_TOO_LARGE', `input is larger than ${maxBytes} bytes`);
  }
}

/** Collects at most `maxBytes` from `stream`; one byte more is an InputTooLargeError (a never-ending input is not read to the end). */
async function readBounded(stream: AsyncIterable<Uint8Array>, maxBytes: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.length;
    if (size > maxBytes) throw new InputTooLargeError(maxBytes);
    chunks.push(chunk);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

/**
 * Reads `path`, or standard input for `-`, up to `maxBytes`. An unreadable
 * input is a usage error (exit 2); a larger one an InputTooLargeError.
 */
export async function readInput(path: string, source: InputSource, maxBytes: number, flag?: string): Promise<Uint8Array> {
  try {
    return await readBounded(path === '-' ? source.stdin() : createReadStream(path), maxBytes);
  } catch (cause) {
    if (cause instanceof InputTooLargeError) throw cause;
    const what = path === '-' ? 'standard input' : path;
    throw new UsageError(`${flag ? `${flag} ${what}` : `cannot read ${what}`}: ${readFailure(cause)}`);
  }
}

const READ_FAILURE_WORDS: Record<string, string> = { ENOENT: 'no such file', EACCES: 'permission denied', EISDIR: 'is a directory', ENOTDIR: 'a parent is not a directory', ELOOP: 'too many symbolic links' };

/** Why a file could not be read, in words with the errno code (`no such file (ENOENT)`), else the message. */
export function readFailure(cause: unknown): string {
  const code = (cause as NodeJS.ErrnoException).code;
  if (!code) return (cause as Error).message;
  return READ_FAILURE_WORDS[code] ? `${READ_FAILURE_WORDS[code]} (${code})` : code;
}

function isText(bytes: Uint8Array): boolean {
  for (const b of bytes) {
    if (b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f)) continue;
    return false;
  }
  return true;
}

/**
 * A document may arrive as raw CBOR or as hex or base64 text of it. Raw CBOR
 * of a COSE_Sign1 always starts with a non-ASCII byte (0x84 or 0xD2), so
 * printable text is taken as an encoding of the bytes.
 *
 * Empty (or whitespace-only) input is returned as zero bytes: the file was
 * readable, it just holds an invalid document, which the verifier reports as
 * MALFORMED_COSE (exit 1) rather than as a usage error (exit 2).
 */
export function decodeDocumentInput(bytes: Uint8Array): Uint8Array {
  if (!isText(bytes)) return bytes;
  const text = Buffer.from(bytes).toString('latin1').replace(/\s+/g, '');
  if (text.length === 0) return new Uint8Array(0);
  const hex = fromHex(text);
  if (hex) return hex;
  if (/^[A-Za-z0-9+/]+={0,2}$/.test(text) || /^[A-Za-z0-9_-]+={0,2}$/.test(text)) {
    const standard = text.replace(/-/g, '+').replace(/_/g, '/');
    if (standard.replace(/=+$/, '').length % 4 !== 1) return new Uint8Array(Buffer.from(standard, 'base64'));
  }
  throw new UsageError('input is text but neither hex nor base64');
}
