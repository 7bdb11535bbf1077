const PEM_CERT = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----/g;

/**
 * Every certificate in a PEM text, as DER, in order. Text outside the
 * BEGIN/END markers (comments, other block types) is ignored.
 *
 * @throws TypeError when the text holds no certificate or a block is not base64
 */
export function pemCertificates(pem: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const match of pem.matchAll(PEM_CERT)) {
    const body = match[1]!.replace(/\s+/g, '');
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(body) || body.length % 4 !== 0) {
      throw new TypeError('PEM certificate block is not valid base64');
    }
    out.push(new Uint8Array(Buffer.from(body, 'base64')));
  }
  if (out.length === 0) throw new TypeError('no "BEGIN CERTIFICATE" block found in PEM text');
  return out;
}
