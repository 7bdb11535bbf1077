import { readFile } from 'node:fs/promises';
import { X509Certificate } from 'node:crypto';
import {
  AWS_NITRO_ROOT_G1_PEM,
  isAttestationError,
  pemCertificates,
  verifyAttestation,
  type VerifiedDocument,
  type VerifyOptions,
} from '../../broker/verify/index.js';
import { UsageError } from '../errors.js';
import { parseCommand } from '../args.js';
import { decodeDocumentInput, InputTooLargeError, readInput } from '../input.js';

/** Attestation documents are a few KiB (AWS caps every field); hex or base64 text of one stays far below this. */
export const MAX_DOCUMENT_INPUT_BYTES = 1024 * 1024;
import { parseDuration, parseHex, parseInstant, parsePcrRequirements } from '../parse.js';
import type { CliIo } from '../io.js';
import { pcrsFromDocument, type PcrValues } from '../../lib/pcrs.js';

export const VERIFY_USAGE = `Usage: keygate verify <file|-> [options]

Verifies an AWS Nitro Enclaves attestation document (raw CBOR, hex or base64).

Options:
  --root FILE        PEM file of trusted root certificate(s); repeatable.
                     Default: the bundled AWS Nitro root G1.
  --at MS|ISO8601    verification time (default: now)
  --max-age DUR      reject documents older than DUR (300, 30s, 5m, 1h);
                     60 s of future skew is allowed
  --nonce HEX        require this exact nonce
  --pcr N=HEX        require PCR N to equal HEX; repeatable
  --allow-debug      accept debug-mode enclaves (PCR0/1/2 all zero)
  --json             print one JSON object

Exit status: 0 valid, 1 invalid, 2 usage error or unreadable input.
`;

async function loadRoots(files: readonly string[]): Promise<string[]> {
  const roots: string[] = [];
  for (const file of files) {
    let pem: string;
    try {
      pem = await readFile(file, 'utf8');
    } catch (cause) {
      throw new UsageError(`--root: cannot read ${file}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`);
    }
    try {
      pemCertificates(pem);
    } catch (cause) {
      throw new UsageError(`--root: ${file}: ${(cause as Error).message}`);
    }
    roots.push(pem);
  }
  return roots;
}

function subjectOf(der: Uint8Array): string {
  return new X509Certificate(der).subject.split('\n').join(', ');
}

function hexOrNull(bytes: Uint8Array | null): string | null {
  return bytes === null ? null : Buffer.from(bytes).toString('hex');
}

/** The `--json` shape of a valid document; other tools parse it, so its fields are fixed. */
export function documentJson(doc: VerifiedDocument): Record<string, unknown> {
  const pcrs = pcrsFromDocument(doc.pcrs);
  return {
    moduleId: doc.moduleId,
    timestamp: doc.timestamp,
    digest: doc.digest,
    pcrs,
    publicKey: hexOrNull(doc.publicKey),
    userData: hexOrNull(doc.userData),
    nonce: hexOrNull(doc.nonce),
    debug: doc.debug,
    certificate: {
      subject: subjectOf(doc.signingCertificate.der),
      notBefore: doc.signingCertificate.notBefore.toISOString(),
      notAfter: doc.signingCertificate.notAfter.toISOString(),
      sha256: doc.signingCertificate.sha256,
    },
  };
}

function humanSummary(doc: VerifiedDocument): string {
  const json = documentJson(doc) as { pcrs: PcrValues; certificate: { subject: string } };
  const lines = [
    'VALID attestation document',
    `  module      ${doc.moduleId}`,
    `  timestamp   ${new Date(doc.timestamp).toISOString()} (${doc.timestamp})`,
    `  debug       ${doc.debug ? 'yes (PCR0/1/2 are zero)' : 'no'}`,
  ];
  for (const [index, value] of Object.entries(json.pcrs)) {
    if (value === undefined || (/^0+$/.test(value) && !['0', '1', '2'].includes(index))) continue;
    lines.push(`  PCR${index.padEnd(9)}${value}`);
  }
  lines.push(`  public key  ${doc.publicKey ? `${doc.publicKey.length} bytes` : 'none'}`);
  lines.push(`  nonce       ${doc.nonce ? Buffer.from(doc.nonce).toString('hex') : 'none'}`);
  lines.push(`  signer      ${json.certificate.subject}`);
  lines.push(`  valid until ${doc.signingCertificate.notAfter.toISOString()}`);
  return `${lines.join('\n')}\n`;
}

/** `keygate verify`: exit 0 valid, 1 invalid, 2 usage. */
export async function verifyCommand(argv: readonly string[], io: CliIo, now: () => number): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    {
      root: { type: 'string', multiple: true },
      at: { type: 'string' },
      'max-age': { type: 'string' },
      nonce: { type: 'string' },
      pcr: { type: 'string', multiple: true },
      'allow-debug': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    Infinity,
  );
  if (values.help) {
    io.out(VERIFY_USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError('verify takes exactly one document (a file path or - for stdin)');

  const options: VerifyOptions = {
    at: values.at === undefined ? now() : parseInstant(values.at, '--at'),
    roots: values.root?.length ? await loadRoots(values.root) : [AWS_NITRO_ROOT_G1_PEM],
    maxAgeMs: values['max-age'] === undefined ? undefined : parseDuration(values['max-age'], '--max-age'),
    expectedNonce: values.nonce === undefined ? undefined : parseHex(values.nonce, '--nonce'),
    pcrs: parsePcrRequirements(values.pcr ?? []),
    allowDebug: values['allow-debug'] ?? false,
  };
  let input: Uint8Array;
  try {
    input = await readInput(positionals[0]!, io, MAX_DOCUMENT_INPUT_BYTES);
  } catch (err) {
    if (!(err instanceof InputTooLargeError)) throw err;
    // A readable input that cannot be a document (real ones are a few KiB): invalid, not a usage error.
    const message = `the input is larger than ${MAX_DOCUMENT_INPUT_BYTES} bytes: not an attestation document`;
    io.out(values.json ? `${JSON.stringify({ valid: false, code: 'MALFORMED_COSE', message })}\n` : `INVALID MALFORMED_COSE: ${message}\n`);
    return 1;
  }
  const document = decodeDocumentInput(input);

  try {
    const doc = verifyAttestation(document, options);
    io.out(values.json ? `${JSON.stringify({ valid: true, document: documentJson(doc) })}\n` : humanSummary(doc));
    return 0;
  } catch (err) {
    // TypeError is how the verifier reports unusable options (a --root PEM whose certificate cannot be parsed).
    if (err instanceof TypeError) throw new UsageError(err.message);
    if (!isAttestationError(err)) throw err;
    io.out(values.json ? `${JSON.stringify({ valid: false, code: err.code, message: err.message })}\n` : `INVALID ${err.code}: ${err.message}\n`);
    return 1;
  }
}
