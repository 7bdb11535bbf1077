/**
 * Builds Enclave Image Files in tests from known section contents, and
 * computes their PCRs a second, deliberately simple way (whole buffers, a
 * bitwise CRC-32), independent of the streaming reader under test.
 */
import { createHash } from 'node:crypto';
import { X509Certificate } from 'node:crypto';
import { Encoder } from 'cbor-x';
import type { ImagePcrs } from '../../lib/pcrs.js';

export interface EifParts {
  kernel: Buffer;
  cmdline: Buffer;
  ramdisks: Buffer[];
  metadata?: Buffer;
  /** PEM of the signing certificate for a signed EIF. */
  signingCertPem?: string;
  version?: number;
  flags?: number;
}

function crc32(data: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function sectionHeader(type: number, size: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(type, 0);
  b.writeBigUInt64BE(BigInt(size), 4);
  return b;
}

/** serde_cbor's encoding of Vec<PcrSignature>: byte vectors as arrays of integers. */
export function signatureSection(certPem: string): Buffer {
  return Buffer.from(new Encoder({ useRecords: false }).encode([{ signing_certificate: [...Buffer.from(certPem)], signature: [...Buffer.from('not checked')] }]));
}

/** Sections in the order eif_build writes them: kernel, cmdline, metadata, ramdisks, signature. */
export function sectionsOf(p: EifParts): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = [[1, p.kernel], [2, p.cmdline], [5, p.metadata ?? Buffer.from('{"ImageName":"test"}')]];
  for (const r of p.ramdisks) out.push([3, r]);
  if (p.signingCertPem) out.push([4, signatureSection(p.signingCertPem)]);
  return out;
}

export function buildEif(p: EifParts, sections: Array<[number, Buffer]> = sectionsOf(p)): Buffer {
  const header = Buffer.alloc(548);
  header.write('.eif', 0, 'latin1');
  header.writeUInt16BE(p.version ?? 4, 4);
  header.writeUInt16BE(p.flags ?? 0, 6);
  header.writeBigUInt64BE(1n << 30n, 8);
  header.writeBigUInt64BE(2n, 16);
  header.writeUInt16BE(sections.length, 26);
  let offset = 548;
  sections.forEach(([, data], i) => {
    header.writeBigUInt64BE(BigInt(offset), 28 + i * 8);
    header.writeBigUInt64BE(BigInt(data.length), 28 + 256 + i * 8);
    offset += 12 + data.length;
  });
  const body = Buffer.concat(sections.flatMap(([type, data]) => [sectionHeader(type, data.length), data]));
  header.writeUInt32BE(crc32(Buffer.concat([header.subarray(0, 544), body])), 544);
  return Buffer.concat([header, body]);
}

const sha384 = (...parts: Buffer[]): Buffer => createHash('sha384').update(Buffer.concat(parts)).digest();
const pcr = (data: Buffer): string => sha384(Buffer.alloc(48), sha384(data)).toString('hex');

/** PCR0 = all boot bytes, PCR1 = kernel+cmdline+first ramdisk, PCR2 = the other ramdisks, PCR8 = the certificate's DER. */
export function expectedPcrs(p: EifParts): ImagePcrs {
  const [first, ...rest] = p.ramdisks;
  return {
    '0': pcr(Buffer.concat([p.kernel, p.cmdline, ...p.ramdisks])),
    '1': pcr(Buffer.concat([p.kernel, p.cmdline, first ?? Buffer.alloc(0)])),
    '2': pcr(Buffer.concat(rest)),
    ...(p.signingCertPem ? { '8': pcr(new X509Certificate(p.signingCertPem).raw) } : {}),
  };
}
