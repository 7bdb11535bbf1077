// PEM reading decides which roots the broker trusts: every certificate block,
// in order, exactly its bytes; anything that is not clean base64 is refused.
import { describe, expect, it } from 'vitest';
import { AWS_NITRO_ROOT_G1_DER, AWS_NITRO_ROOT_G1_PEM } from '../../broker/verify/aws-root.js';
import { pemCertificates } from '../../broker/verify/pem.js';

const block = (body: string, eol = '\n'): string => `-----BEGIN CERTIFICATE-----${eol}${body}${eol}-----END CERTIFICATE-----${eol}`;
const bytes = (list: Uint8Array[]): string[] => list.map((b) => Buffer.from(b).toString('hex'));
const b64 = (hex: string): string => Buffer.from(hex, 'hex').toString('base64');

/** Base64 of `n` bytes (0x00, 0x01, ...), wrapped at 64 columns like PEM writers do. */
function wrapped(n: number, eol = '\n'): { text: string; hex: string } {
  const buf = Buffer.from(Array.from({ length: n }, (_, i) => i & 0xff));
  return { text: buf.toString('base64').replace(/(.{64})/g, `$1${eol}`).trim(), hex: buf.toString('hex') };
}

function refused(pem: string): TypeError {
  try {
    pemCertificates(pem);
  } catch (err) {
    expect(err).toBeInstanceOf(TypeError);
    return err as TypeError;
  }
  return expect.unreachable('accepted');
}

describe('pemCertificates', () => {
  it('reads the pinned AWS root exactly', () => {
    expect(bytes(pemCertificates(AWS_NITRO_ROOT_G1_PEM))).toEqual(bytes([AWS_NITRO_ROOT_G1_DER]));
  });

  it('reads every block, in order, ignoring text and other blocks around them', () => {
    const one = wrapped(100);
    const two = wrapped(3);
    const pem = [
      'Bag Attributes: comment',
      '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----',
      block(one.text),
      'between',
      block(two.text),
      block(b64('ff')),
      'trailing',
    ].join('\n');
    expect(bytes(pemCertificates(pem))).toEqual([one.hex, two.hex, 'ff']);
  });

  it.each([
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['tabs and spaces', ' \t'],
    ['no line breaks', ''],
  ])('accepts %s inside and around the body', (_name, eol) => {
    const one = wrapped(200, eol);
    expect(bytes(pemCertificates(block(one.text, eol)))).toEqual([one.hex]);
    expect(bytes(pemCertificates(block(`${eol}${one.text}${eol}${eol}`, eol)))).toEqual([one.hex]);
  });

  it.each([
    ['no padding', b64('000102'), '000102'],
    ['one pad', b64('0001'), '0001'],
    ['two pads', b64('00'), '00'],
    ['all base64 characters', 'AZaz09+/', Buffer.from('AZaz09+/', 'base64').toString('hex')],
  ])('accepts %s', (_name, body, hex) => {
    expect(bytes(pemCertificates(block(body)))).toEqual([hex]);
  });

  it.each([
    ['empty body', ''],
    ['only whitespace', ' \n '],
    ['length not a multiple of 4', 'AAAAA'],
    ['length 6', 'AAAAAA'],
    ['padding in the middle', 'AA=A'],
    ['leading padding', '=AAA'],
    ['three pads', 'A==='],
    ['only padding', '===='],
    ['padding then data', `${b64('00')}AAAA`],
  ])('refuses a block that is not base64: %s', (_name, body) => {
    refused(block(body));
    // ... also after a good block: nothing partial is returned.
    refused(`${block(b64('00'))}${block(body)}`);
  });

  it.each([
    ['empty text', ''],
    ['no block', 'hello'],
    ['another block type', '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'],
    ['no END marker', '-----BEGIN CERTIFICATE-----\nAAAA\n'],
    ['no BEGIN marker', 'AAAA\n-----END CERTIFICATE-----\n'],
    ['characters outside base64', block('AA*A')],
    ['lower-case markers', '-----begin certificate-----\nAAAA\n-----end certificate-----\n'],
  ])('refuses text without a certificate block: %s', (_name, pem) => {
    refused(pem);
  });
});
