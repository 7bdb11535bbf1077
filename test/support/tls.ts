/** TLS material generated in the test: a CA and a loopback server certificate (the upstream), a self-signed gateway certificate and its SPKI pin. */
import { createHash, createPublicKey } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { issue, type CertSpec, type Issued } from './pki.js';

export interface TlsPair {
  readonly certPem: string;
  readonly keyPem: string;
  /** SHA-256 of the certificate's SubjectPublicKeyInfo, hex (what the agent pins). */
  readonly spkiSha256: string;
}

function spec(name: string, ca: boolean, extra: x509.Extension[] = []): CertSpec {
  const at = Date.now();
  return { name, notBefore: at - 3_600_000, notAfter: at + 24 * 3_600_000, ca, curve: 'P-256', signingHash: 'SHA-256', keyIdentifiers: true, extraExtensions: extra, ...(ca ? { keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign } : {}) };
}

function pair(issued: Issued): TlsPair {
  return {
    certPem: issued.pem,
    keyPem: issued.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    spkiSha256: createHash('sha256').update(createPublicKey(issued.privateKey).export({ type: 'spki', format: 'der' })).digest('hex'),
  };
}

const loopbackNames = (): x509.Extension =>
  new x509.SubjectAlternativeNameExtension([
    { type: 'ip', value: '127.0.0.1' },
    { type: 'dns', value: 'localhost' },
  ]);

/** A test CA and a server certificate it issued for 127.0.0.1 / localhost. */
export async function loopbackCa(): Promise<{ caPem: string; server: TlsPair }> {
  const ca = await issue(spec('keygate test upstream CA', true));
  const server = await issue(spec('upstream.test', false, [loopbackNames()]), ca);
  return { caPem: ca.pem, server: pair(server) };
}

/** A self-signed certificate (the gateway listener's: enclaves pin its key, no chain). */
export async function selfSigned(name = 'keygate gateway'): Promise<TlsPair> {
  return pair(await issue(spec(name, false, [loopbackNames()])));
}
