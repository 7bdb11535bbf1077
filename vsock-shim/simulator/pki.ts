/**
 * A PKI generated in code, shaped like AWS's Nitro PKI, for the NSM
 * simulator and tests:
 * P-384 root -> regional CA (pathLen 2) -> zonal CA (pathLen 1) ->
 * instance CA (pathLen 0) -> 3-hour leaf without authorityKeyIdentifier.
 * Every certificate can be bent for negative tests through `tweak`.
 */
// @peculiar/x509 resolves its services through tsyringe, which needs the
// Reflect metadata API before the library is evaluated.
import 'reflect-metadata';
import { webcrypto, KeyObject, randomBytes } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

type CryptoKeyPair = webcrypto.CryptoKeyPair;

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface Issued {
  readonly cert: x509.X509Certificate;
  readonly der: Uint8Array;
  readonly pem: string;
  readonly keys: CryptoKeyPair;
  /** Node KeyObject of the private key, for signing COSE documents. */
  readonly privateKey: KeyObject;
  readonly name: string;
}

/** What one certificate in the chain looks like; every field overridable. */
export interface CertSpec {
  name: string;
  notBefore: number;
  notAfter: number;
  ca: boolean;
  pathLen?: number;
  /** keyUsage flags; undefined leaves the extension out. */
  keyUsage?: x509.KeyUsageFlags;
  keyUsageCritical?: boolean;
  /** Named curve of the subject key. */
  curve: 'P-384' | 'P-256';
  /** Hash of the issuer's signature (SHA-384 is what Nitro uses). */
  signingHash: 'SHA-384' | 'SHA-256';
  extraExtensions?: x509.Extension[];
  /** Add SKI/AKI like AWS CA certificates do (the leaf has neither AKI). */
  keyIdentifiers: boolean;
  /** Omit basicConstraints entirely. */
  omitBasicConstraints?: boolean;
}

export type Level = 'root' | 'regional' | 'zonal' | 'instance' | 'leaf';
export type ChainTweaks = Partial<Record<Level, Partial<CertSpec>>>;

export interface TestPki {
  readonly root: Issued;
  /** regional, zonal, instance (top-down) */
  readonly intermediates: readonly Issued[];
  readonly leaf: Issued;
  /** root first, as AWS orders it */
  readonly cabundle: readonly Uint8Array[];
  readonly at: number;
}

/** Issues one certificate; `issuer` undefined means self-signed. */
export async function issue(spec: CertSpec, issuer?: Issued): Promise<Issued> {
  const alg = { name: 'ECDSA', namedCurve: spec.curve } as const;
  const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as CryptoKeyPair;
  const extensions: x509.Extension[] = [];
  if (!spec.omitBasicConstraints) extensions.push(new x509.BasicConstraintsExtension(spec.ca, spec.pathLen, true));
  if (spec.keyUsage !== undefined) extensions.push(new x509.KeyUsagesExtension(spec.keyUsage, spec.keyUsageCritical ?? true));
  if (spec.keyIdentifiers) {
    extensions.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey));
    if (issuer) extensions.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey));
  }
  extensions.push(...(spec.extraExtensions ?? []));
  const signingKey = issuer ? issuer.keys.privateKey : keys.privateKey;
  const cert = await x509.X509CertificateGenerator.create({
    // Random positive 64-bit serials: unique across processes sharing a persisted dev PKI.
    serialNumber: `${(randomBytes(1)[0]! & 0x3f | 0x10).toString(16)}${randomBytes(7).toString('hex')}`,
    subject: `C=US, O=Amazon, OU=AWS, CN=${spec.name}`,
    // The issuer's Name object, not its text form, so the encoding matches its subject byte for byte.
    issuer: issuer ? issuer.cert.subjectName : `C=US, O=Amazon, OU=AWS, CN=${spec.name}`,
    notBefore: new Date(spec.notBefore),
    notAfter: new Date(spec.notAfter),
    signingAlgorithm: { name: 'ECDSA', hash: spec.signingHash },
    publicKey: keys.publicKey,
    signingKey,
    extensions,
  });
  const der = new Uint8Array(cert.rawData);
  return { cert, der, pem: cert.toString('pem'), keys, privateKey: KeyObject.from(keys.privateKey), name: spec.name };
}

/** The AWS-shaped default for each level, valid around `at`. */
export function defaultSpecs(at: number): Record<Level, CertSpec> {
  const ca = x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature;
  const common = { curve: 'P-384', signingHash: 'SHA-384', keyIdentifiers: true } as const;
  return {
    root: { ...common, name: 'test.nitro-enclaves', notBefore: at - 365 * DAY, notAfter: at + 30 * 365 * DAY, ca: true, keyUsage: ca },
    regional: { ...common, name: 'test-region.nitro-enclaves', notBefore: at - 10 * DAY, notAfter: at + 20 * DAY, ca: true, pathLen: 2, keyUsage: ca },
    zonal: { ...common, name: 'test-zone.nitro-enclaves', notBefore: at - DAY, notAfter: at + 2 * DAY, ca: true, pathLen: 1, keyUsage: ca },
    instance: { ...common, name: 'i-0123456789abcdef0.nitro-enclaves', notBefore: at - 2 * HOUR, notAfter: at + 20 * HOUR, ca: true, pathLen: 0, keyUsage: ca },
    leaf: {
      ...common,
      name: 'i-0123456789abcdef0-enc0123456789abcdef.test',
      notBefore: at - 5_000,
      notAfter: at - 5_000 + 3 * HOUR,
      ca: false,
      keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.nonRepudiation,
      keyUsageCritical: false,
      keyIdentifiers: false,
    },
  };
}

/** Builds a full chain valid at `at`, with optional per-level changes. */
export async function createTestPki(at: number, tweaks: ChainTweaks = {}): Promise<TestPki> {
  const specs = defaultSpecs(at);
  const spec = (level: Level): CertSpec => ({ ...specs[level], ...tweaks[level] });
  const root = await issue(spec('root'));
  const regional = await issue(spec('regional'), root);
  const zonal = await issue(spec('zonal'), regional);
  const instance = await issue(spec('instance'), zonal);
  const leaf = await issue(spec('leaf'), instance);
  return {
    root,
    intermediates: [regional, zonal, instance],
    leaf,
    cabundle: [root.der, regional.der, zonal.der, instance.der],
    at,
  };
}

/** A fresh leaf under an existing PKI's instance CA (what a new enclave gets). */
export async function issueLeaf(pki: TestPki, tweak: Partial<CertSpec> = {}): Promise<Issued> {
  return issue({ ...defaultSpecs(pki.at).leaf, ...tweak }, pki.intermediates[2]);
}
