import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { Decoder } from 'cbor-x';
import { X509Certificate } from 'node:crypto';
import type { ImagePcrs } from '../../lib/pcrs.js';
import { EIF_HEADER_SIZE, EifError, FLAG_ARCH_ARM64, SECTION_HEADER_SIZE, SECTION_NAMES, SectionType, parseHeader, type EifHeader } from './format.js';

/** An EIF's layout and measurements (what `keygate describe-eif` reports). */
export interface EifDescription {
  readonly version: number;
  readonly arch: 'x86_64' | 'aarch64';
  readonly defaultMemoryBytes: string;
  readonly defaultCpus: string;
  readonly sections: ReadonlyArray<{ readonly type: string; readonly size: number }>;
  readonly crc: { readonly stored: number; readonly computed: number; readonly ok: boolean } | null;
  readonly signed: boolean;
  /** PCR index -> lower-case hex, as the Nitro hypervisor will measure the image. */
  readonly pcrs: ImagePcrs;
  /** The metadata section (JSON), when present. */
  readonly metadata: unknown;
  /** SHA-384 of the whole file. */
  readonly fileSha384: string;
}

const ZERO48 = Buffer.alloc(48);
const CHUNK = 1 << 20;

export interface DescribeEifOptions {
  /** Called after each chunk read with the bytes read so far and the file's size (a progress display). */
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** A PCR as Nitro extends it once from zero: SHA-384(48 zero bytes || digest). */
export function extendFromZero(digest: Buffer): string {
  return createHash('sha384').update(ZERO48).update(digest).digest('hex');
}

const cbor = new Decoder({ useRecords: false, mapsAsObjects: true });

/** The DER signing certificate from a signature section (CBOR array of { signing_certificate: PEM, signature }). */
function signingCertificateDer(section: Buffer): Buffer {
  let value: unknown;
  try {
    value = cbor.decode(section);
  } catch (cause) {
    throw new EifError(`signature section is not CBOR: ${(cause as Error).message}`);
  }
  const first = Array.isArray(value) ? (value[0] as Record<string, unknown> | undefined) : undefined;
  const raw = first?.signing_certificate;
  // serde_cbor writes Vec<u8> as an array of integers; accept a byte string too.
  const pem = raw instanceof Uint8Array ? Buffer.from(raw) : Array.isArray(raw) && raw.every((b) => Number.isInteger(b) && b >= 0 && b < 256) ? Buffer.from(raw as number[]) : undefined;
  if (!pem) throw new EifError('signature section has no signing certificate');
  try {
    return new X509Certificate(pem).raw;
  } catch (cause) {
    throw new EifError(`signing certificate is not a PEM certificate: ${(cause as Error).message}`);
  }
}

/**
 * Reads an EIF section by section (streaming: images are hundreds of MB),
 * checks the header against the layout and the CRC, and computes PCR0/1/2
 * (and PCR8 for signed images) the way nitro-cli does:
 * PCR0 over kernel, cmdline and every ramdisk; PCR1 over kernel, cmdline and
 * the first ramdisk; PCR2 over the other ramdisks; PCR8 over the signing
 * certificate's DER. Each is SHA-384(0^48 || SHA-384(bytes)).
 *
 * @throws EifError for anything malformed, truncated or inconsistent
 */
export async function describeEif(path: string, options: DescribeEifOptions = {}): Promise<EifDescription> {
  const file = await open(path, 'r');
  try {
    const size = (await file.stat()).size;
    const headerBuf = Buffer.alloc(EIF_HEADER_SIZE);
    const { bytesRead } = await file.read(headerBuf, 0, EIF_HEADER_SIZE, 0);
    const header: EifHeader = parseHeader(headerBuf.subarray(0, bytesRead));
    const whole = createHash('sha384').update(headerBuf);
    let crc = crc32(headerBuf.subarray(0, EIF_HEADER_SIZE - 4));

    const image = createHash('sha384');
    const bootstrap = createHash('sha384');
    const app = createHash('sha384');
    let certDer: Buffer | undefined;
    let metadata: unknown = null;
    const sections: Array<{ type: string; size: number }> = [];
    let ramdisks = 0;
    let kernels = 0;
    let cmdlines = 0;
    let pos = EIF_HEADER_SIZE;
    const chunk = Buffer.alloc(CHUNK);

    for (let index = 0; pos < size; index++) {
      if (index >= header.sectionCount) throw new EifError(`${size - pos} bytes after the ${header.sectionCount} sections the header announces`);
      if (pos + SECTION_HEADER_SIZE > size) throw new EifError(`truncated section header at offset ${pos}`);
      const sh = Buffer.alloc(SECTION_HEADER_SIZE);
      await file.read(sh, 0, SECTION_HEADER_SIZE, pos);
      const type = sh.readUInt16BE(0);
      const sectionSize = sh.readBigUInt64BE(4);
      if (!SECTION_NAMES[type]) throw new EifError(`section ${index} has invalid type ${type}`);
      if (header.sectionOffsets[index] !== BigInt(pos)) throw new EifError(`section ${index} is at offset ${pos}, the header says ${header.sectionOffsets[index]}`);
      if (header.sectionSizes[index] !== sectionSize) throw new EifError(`section ${index} is ${sectionSize} bytes, the header says ${header.sectionSizes[index]}`);
      const dataStart = pos + SECTION_HEADER_SIZE;
      if (BigInt(dataStart) + sectionSize > BigInt(size)) throw new EifError(`section ${index} (${SECTION_NAMES[type]}) is truncated`);
      const length = Number(sectionSize);
      crc = crc32(sh, crc);
      whole.update(sh);

      const targets: Hash[] = [];
      if (type === SectionType.Kernel || type === SectionType.Cmdline) targets.push(image, bootstrap);
      if (type === SectionType.Ramdisk) targets.push(image, ramdisks === 0 ? bootstrap : app);
      const keep = type === SectionType.Signature || type === SectionType.Metadata;
      const kept: Buffer[] = [];
      for (let off = 0; off < length; ) {
        const n = Math.min(CHUNK, length - off);
        const { bytesRead: got } = await file.read(chunk, 0, n, dataStart + off);
        if (got !== n) throw new EifError(`section ${index} is truncated`);
        const piece = chunk.subarray(0, n);
        crc = crc32(piece, crc);
        whole.update(piece);
        for (const h of targets) h.update(piece);
        if (keep) kept.push(Buffer.from(piece));
        off += n;
        options.onProgress?.(dataStart + off, size);
      }
      if (type === SectionType.Kernel) kernels++;
      if (type === SectionType.Cmdline) cmdlines++;
      if (type === SectionType.Ramdisk) ramdisks++;
      if (type === SectionType.Signature) {
        if (certDer) throw new EifError('more than one signature section');
        certDer = signingCertificateDer(Buffer.concat(kept));
      }
      if (type === SectionType.Metadata) {
        try {
          metadata = JSON.parse(Buffer.concat(kept).toString('utf8'));
        } catch {
          throw new EifError('metadata section is not JSON');
        }
      }
      sections.push({ type: SECTION_NAMES[type]!, size: length });
      pos = dataStart + length;
    }
    if (sections.length !== header.sectionCount) throw new EifError(`the header announces ${header.sectionCount} sections, the file holds ${sections.length}`);
    if (kernels !== 1 || cmdlines !== 1 || ramdisks === 0) throw new EifError('an EIF needs exactly one kernel, one cmdline and at least one ramdisk');

    const crcOk = header.version >= 2 ? (crc >>> 0) === header.crc32 : null;
    if (crcOk === false) throw new EifError(`CRC mismatch: header says ${header.crc32.toString(16)}, content is ${(crc >>> 0).toString(16)}`);
    const pcrs: EifDescription['pcrs'] = {
      '0': extendFromZero(image.digest()),
      '1': extendFromZero(bootstrap.digest()),
      '2': extendFromZero(app.digest()),
      ...(certDer ? { '8': extendFromZero(createHash('sha384').update(certDer).digest()) } : {}),
    };
    return {
      version: header.version,
      arch: header.flags & FLAG_ARCH_ARM64 ? 'aarch64' : 'x86_64',
      defaultMemoryBytes: header.defaultMemory.toString(),
      defaultCpus: header.defaultCpus.toString(),
      sections,
      crc: crcOk === null ? null : { stored: header.crc32, computed: crc >>> 0, ok: crcOk },
      signed: Boolean(certDer),
      pcrs,
      metadata,
      fileSha384: whole.digest('hex'),
    };
  } finally {
    await file.close();
  }
}
