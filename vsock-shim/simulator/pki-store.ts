import 'reflect-metadata';
import { createPrivateKey, webcrypto, type KeyObject } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { createFileExclusive, ensureDirectory } from '../../lib/durable-fs.js';
import { createTestPki, issueLeaf, type Issued, type TestPki } from './pki.js';

const DAY = 86_400_000;

interface Stored {
  readonly version: 1;
  readonly createdAt: number;
  readonly levels: ReadonlyArray<{ readonly name: string; readonly certPem: string; readonly keyPem: string }>;
}

async function restore(entry: Stored['levels'][number]): Promise<Issued> {
  const cert = new x509.X509Certificate(entry.certPem);
  const privateKey: KeyObject = createPrivateKey(entry.keyPem);
  const alg = { name: 'ECDSA', namedCurve: 'P-384' } as const;
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), alg, true, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', cert.publicKey.rawData, alg, true, ['verify']),
  };
  return { cert, der: new Uint8Array(cert.rawData), pem: cert.toString('pem'), keys, privateKey, name: entry.name };
}

function serialise(pki: TestPki, createdAt: number): Stored {
  const levels = [pki.root, ...pki.intermediates].map((i) => ({
    name: i.name,
    certPem: i.pem,
    keyPem: i.privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
  }));
  return { version: 1, createdAt, levels };
}

/**
 * The development PKI shared by a `--dev` broker and simulated enclaves in
 * other processes: generated once (CAs valid a year), stored in `dir`
 * (private keys, mode 0600), reloaded after. It is a development root:
 * nothing outside `--dev` trusts it.
 */
export async function openDevPki(dir: string, now = Date.now()): Promise<TestPki> {
  const file = join(dir, 'dev-pki.json');
  let stored: Stored | undefined;
  try {
    stored = JSON.parse(await readFile(file, 'utf8')) as Stored;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read ${file}: ${(err as Error).message}`);
  }
  if (stored) {
    const [root, regional, zonal, instance] = await Promise.all(stored.levels.map(restore));
    const expires = Math.min(...[root, regional, zonal, instance].map((i) => i!.cert.notAfter.getTime()));
    if (root && regional && zonal && instance && expires > now + DAY) {
      const restored = { root, intermediates: [regional, zonal, instance], leaf: instance, cabundle: [root.der, regional.der, zonal.der, instance.der], at: now };
      // Leaves are never stored: each process gets its own, as each enclave does.
      return { ...restored, leaf: await issueLeaf(restored) };
    }
    await rm(file, { force: true }); // expired: start over (brokers pick the new root up on restart)
  }
  const year = { notAfter: now + 365 * DAY };
  const pki = await createTestPki(now, { regional: year, zonal: year, instance: year });
  await ensureDirectory(dir);
  // Exclusive create: if another process stored its PKI first, everyone uses that one root.
  if (!(await createFileExclusive(file, JSON.stringify(serialise(pki, now)), 0o600))) return openDevPki(dir, now);
  return pki;
}
