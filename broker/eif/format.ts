/**
 * The Enclave Image File format as aws-nitro-enclaves-image-format defines
 * it: a 548-byte big-endian header, then sections, each a 12-byte header
 * (type u16, flags u16, size u64) and its bytes.
 */
import { CodedError } from '../../lib/coded-error.js';

export const EIF_MAGIC = Buffer.from('.eif', 'latin1');
export const EIF_HEADER_SIZE = 548;
export const SECTION_HEADER_SIZE = 12;
export const MAX_SECTIONS = 32;
/** Versions this reader understands (v2 added the CRC, v3 signatures, v4 metadata). */
export const SUPPORTED_VERSIONS = [1, 2, 3, 4] as const;
export const FLAG_ARCH_ARM64 = 0x1;

export const SectionType = {
  Invalid: 0,
  Kernel: 1,
  Cmdline: 2,
  Ramdisk: 3,
  Signature: 4,
  Metadata: 5,
} as const;
export type SectionType = (typeof SectionType)[keyof typeof SectionType];
export const SECTION_NAMES: Record<number, string> = { 1: 'kernel', 2: 'cmdline', 3: 'ramdisk', 4: 'signature', 5: 'metadata' };

export interface EifHeader {
  readonly version: number;
  readonly flags: number;
  readonly defaultMemory: bigint;
  readonly defaultCpus: bigint;
  readonly sectionCount: number;
  readonly sectionOffsets: readonly bigint[];
  readonly sectionSizes: readonly bigint[];
  readonly crc32: number;
}

/** A malformed, truncated or unsupported EIF. */
export class EifError extends CodedError<'EIF_INVALID'> {
  override readonly name = 'EifError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EIF_INVALID', message, options);
  }
}

/** Parses and checks the fixed header. */
export function parseHeader(buf: Buffer): EifHeader {
  if (buf.length < EIF_HEADER_SIZE) throw new EifError(`file is ${buf.length} bytes: too short for an EIF header (${EIF_HEADER_SIZE})`);
  if (!buf.subarray(0, 4).equals(EIF_MAGIC)) throw new EifError('not an EIF file (bad magic)');
  const version = buf.readUInt16BE(4);
  if (!(SUPPORTED_VERSIONS as readonly number[]).includes(version)) throw new EifError(`unsupported EIF version ${version}`);
  const flags = buf.readUInt16BE(6);
  const sectionCount = buf.readUInt16BE(26);
  if (sectionCount === 0 || sectionCount > MAX_SECTIONS) throw new EifError(`section count ${sectionCount} is outside 1..${MAX_SECTIONS}`);
  const sectionOffsets: bigint[] = [];
  const sectionSizes: bigint[] = [];
  for (let i = 0; i < MAX_SECTIONS; i++) {
    sectionOffsets.push(buf.readBigUInt64BE(28 + i * 8));
    sectionSizes.push(buf.readBigUInt64BE(28 + MAX_SECTIONS * 8 + i * 8));
  }
  return {
    version,
    flags,
    defaultMemory: buf.readBigUInt64BE(8),
    defaultCpus: buf.readBigUInt64BE(16),
    sectionCount,
    sectionOffsets,
    sectionSizes,
    crc32: buf.readUInt32BE(EIF_HEADER_SIZE - 4),
  };
}
