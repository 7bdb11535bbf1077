import { DuplicateKeyError, parseJsonStrict } from '../../broker/strict-json.js';

/** The key parseJsonStrict reports as repeated in `text`, or undefined when it parses (other errors are thrown). */
export function duplicateKeyOf(text: string): string | undefined {
  try {
    parseJsonStrict(text);
    return undefined;
  } catch (err) {
    if (err instanceof DuplicateKeyError) return err.key;
    throw err;
  }
}
