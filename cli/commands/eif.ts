import { EifError } from '../../broker/eif/format.js';
import { measureEif } from '../../broker/ops/baselines.js';
import { UsageError } from '../errors.js';
import { parseCommand } from '../args.js';
import type { CliIo } from '../io.js';
import { progressFor } from '../progress.js';

export const DESCRIBE_EIF_USAGE = `Usage: keygate describe-eif FILE [--json]

Parses an Enclave Image File, checks its header and CRC, and prints the PCRs
the Nitro hypervisor will measure (PCR0/1/2, and PCR8 for signed images).
On a terminal, a large image's reading progress is shown on stderr (never
when output is piped, nor with --json).
Exit status: 0 valid, 1 malformed image, 2 usage error or unreadable file.
`;

/** `keygate describe-eif` */
export async function describeEifCommand(argv: readonly string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseCommand(argv, { json: { type: 'boolean' } }, 1);
  if (values.help) {
    io.out(DESCRIBE_EIF_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('expected one EIF file');
  const progress = progressFor(io, positionals[0]!, { json: Boolean(values.json) });
  try {
    const d = await measureEif(positionals[0]!, progress ? { onProgress: progress.onProgress } : {}).finally(() => progress?.end());
    if (values.json) {
      io.out(`${JSON.stringify({ valid: true, ...d, Measurements: { HashAlgorithm: 'Sha384 { ... }', ...Object.fromEntries(Object.entries(d.pcrs).map(([k, v]) => [`PCR${k}`, v])) } })}\n`);
    } else {
      io.out(`EIF v${d.version} (${d.arch}), ${d.sections.map((s) => `${s.type} ${s.size} B`).join(', ')}\n`);
      io.out(`CRC ${d.crc ? (d.crc.ok ? 'ok' : 'MISMATCH') : 'not present (v1)'}; ${d.signed ? 'signed' : 'not signed'}\n`);
      for (const [i, v] of Object.entries(d.pcrs)) io.out(`PCR${i}  ${v}\n`);
    }
    return 0;
  } catch (err) {
    if (!(err instanceof EifError)) throw err;
    io.out(values.json ? `${JSON.stringify({ valid: false, code: 'MALFORMED_EIF', message: err.message })}\n` : `INVALID EIF: ${err.message}\n`);
    return 1;
  }
}
