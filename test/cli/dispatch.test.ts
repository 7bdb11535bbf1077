/** Command dispatch in process: only the CLI's own commands run. */
import { describe, expect, it } from 'vitest';
import { main } from '../../cli/main.js';
import type { CliIo } from '../../cli/io.js';

function io(): CliIo & { text: { out: string; err: string } } {
  const text = { out: '', err: '' };
  return { text, out: (t) => void (text.out += t), err: (t) => void (text.err += t), stdin: async function* () {} };
}

describe('keygate <command>', () => {
  it('an inherited property name is an unknown command, not a crash', async () => {
    for (const name of ['toString', 'constructor', '__proto__', 'hasOwnProperty']) {
      const cli = io();
      expect(await main([name], cli), name).toBe(2);
      expect(cli.text.err).toContain(`unknown command "${name}"`);
    }
  });

  it('loads and runs a command on demand', async () => {
    const cli = io();
    expect(await main(['describe-eif', '--help'], cli)).toBe(0);
    expect(cli.text.out).toMatch(/^Usage: keygate describe-eif/);
  });
});
