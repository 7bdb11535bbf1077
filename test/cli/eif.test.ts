import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeEif } from '../../broker/eif/reader.js';
import { EifError } from '../../broker/eif/format.js';
import { buildEif, expectedPcrs, sectionsOf, type EifParts } from '../support/eif.js';
import { createTestPki } from '../support/pki.js';

let dir: string;
let certPem: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-eif-'));
  certPem = (await createTestPki(Date.now())).intermediates[0]!.pem;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
function file(bytes: Buffer): string {
  const path = join(dir, `image-${n++}.eif`);
  writeFileSync(path, bytes);
  return path;
}

const parts = (over: Partial<EifParts> = {}): EifParts => ({
  kernel: randomBytes(70_000),
  cmdline: Buffer.from('reboot=k panic=30 pci=off nomodules console=ttyS0'),
  ramdisks: [randomBytes(50_000), randomBytes(3 * 1024 * 1024 + 17)],
  ...over,
});

describe('EIF measurement', () => {
  it('computes PCR0/1/2 as nitro-cli does, for two ramdisks (bootstrap + app)', async () => {
    const p = parts();
    const d = await describeEif(file(buildEif(p)));
    expect(d.pcrs).toEqual(expectedPcrs(p));
    expect(d).toMatchObject({ version: 4, arch: 'x86_64', signed: false, crc: { ok: true } });
    expect(d.sections.map((s) => s.type)).toEqual(['kernel', 'cmdline', 'metadata', 'ramdisk', 'ramdisk']);
    expect(d.metadata).toEqual({ ImageName: 'test' });
  });

  it('gives the well-known empty-application PCR2 for a single ramdisk', async () => {
    const p = parts({ ramdisks: [randomBytes(1000)] });
    const d = await describeEif(file(buildEif(p)));
    // SHA-384(0^48 || SHA-384("")): the PCR2 of every image with no application ramdisk.
    expect(d.pcrs['2']).toMatch(/^21b9efbc18480766/);
    expect(d.pcrs['0']).toBe(d.pcrs['1']);
  });

  it('measures PCR8 of a signed image from its signing certificate', async () => {
    const p = parts({ signingCertPem: certPem, flags: 1 });
    const d = await describeEif(file(buildEif(p)));
    expect(d.signed).toBe(true);
    expect(d.arch).toBe('aarch64');
    expect(d.pcrs['8']).toBe(expectedPcrs(p)['8']);
  });

  it('reads a v1 image (no CRC)', async () => {
    const p = parts({ version: 1 });
    const d = await describeEif(file(buildEif(p)));
    expect(d.crc).toBeNull();
    expect(d.pcrs).toEqual(expectedPcrs(p));
  });

  const bad: Array<[string, () => Buffer, RegExp]> = [
    ['empty file', () => Buffer.alloc(0), /too short/],
    ['bad magic', () => { const b = buildEif(parts()); b.write('.elf', 0, 'latin1'); return b; }, /bad magic/],
    ['unsupported version', () => buildEif(parts({ version: 9 })), /unsupported EIF version 9/],
    ['truncated header', () => buildEif(parts()).subarray(0, 300), /too short/],
    ['truncated section', () => buildEif(parts()).subarray(0, 100_000), /truncated/],
    ['truncated section header', () => { const b = buildEif(parts()); return b.subarray(0, 548 + 12 + 70_000 + 5); }, /truncated section header/],
    ['flipped data byte', () => { const b = buildEif(parts()); b[5000]! ^= 1; return b; }, /CRC mismatch/],
    ['flipped header byte', () => { const b = buildEif(parts()); b[10]! ^= 1; return b; }, /CRC mismatch/],
    ['trailing bytes', () => Buffer.concat([buildEif(parts()), Buffer.from('x'.repeat(20))]), /after the 5 sections/],
    ['wrong section offset in header', () => { const b = buildEif(parts()); b.writeBigUInt64BE(600n, 28 + 8); return b; }, /offset/],
    ['invalid section type', () => buildEif(parts(), [[1, Buffer.from('k')], [2, Buffer.from('c')], [7, Buffer.from('?')], [3, Buffer.from('r')]]), /invalid type 7/],
    ['no kernel', () => buildEif(parts(), [[2, Buffer.from('c')], [3, Buffer.from('r')]]), /exactly one kernel/],
    ['no ramdisk', () => buildEif(parts(), [[1, Buffer.from('k')], [2, Buffer.from('c')]]), /at least one ramdisk/],
    ['two kernels', () => buildEif(parts(), [[1, Buffer.from('k')], [1, Buffer.from('k')], [2, Buffer.from('c')], [3, Buffer.from('r')]]), /exactly one kernel/],
    ['zero sections', () => { const b = buildEif(parts()); b.writeUInt16BE(0, 26); return b; }, /section count 0/],
    ['33 sections', () => { const b = buildEif(parts()); b.writeUInt16BE(33, 26); return b; }, /section count 33/],
    ['garbage signature section', () => buildEif(parts(), [...sectionsOf(parts()), [4, Buffer.from([0xff, 0x00])]]), /signature section/],
    ['metadata not JSON', () => buildEif(parts({ metadata: Buffer.from('{nope') })), /metadata section is not JSON/],
  ];
  it.each(bad)('rejects %s', async (_name, make, message) => {
    await expect(describeEif(file(make()))).rejects.toThrow(EifError);
    await expect(describeEif(file(make()))).rejects.toThrow(message);
  });

  it('measures sections larger than its 1 MiB read chunk correctly', async () => {
    const p = parts({ ramdisks: [randomBytes(1024), randomBytes(24 * 1024 * 1024 + 3)] });
    const path = file(buildEif(p));
    const d = await describeEif(path);
    expect(d.pcrs).toEqual(expectedPcrs(p));
    expect(d.fileSha384).toBe((await import('node:crypto')).createHash('sha384').update(readFileSync(path)).digest('hex'));
  });
});
