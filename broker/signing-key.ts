import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject, type JsonWebKey } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { dirname } from 'node:path';
import { createFileExclusive, ensureDirectory } from '../lib/durable-fs.js';

/** The broker's Ed25519 identity: signs release JWSs (pinned by enclaves) and audit seals. */
export interface SigningKey {
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  /** Public JWK with `kid` (RFC 7638 thumbprint), `alg: EdDSA`, `use: sig`. */
  readonly publicJwk: JWK;
  readonly kid: string;
}

/** The signing key held in a private Ed25519 JWK; the kid is its RFC 7638 thumbprint, wherever the JWK is stored. */
export async function fromPrivateJwk(jwk: JsonWebKey): Promise<SigningKey> {
  const privateKey = createPrivateKey({ key: jwk, format: 'jwk' });
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('broker signing key must be Ed25519');
  const publicKey = createPublicKey(privateKey);
  const pub = publicKey.export({ format: 'jwk' }) as JWK;
  const kid = await calculateJwkThumbprint(pub, 'sha256');
  return { privateKey, publicKey, kid, publicJwk: { ...pub, kid, alg: 'EdDSA', use: 'sig' } };
}

/** Loads the signing key from a private JWK file, creating one (mode 0600) if it does not exist. */
export async function loadOrCreateSigningKey(path: string): Promise<SigningKey> {
  let text: string | undefined;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (text === undefined) {
    const { privateKey } = generateKeyPairSync('ed25519');
    const jwk = privateKey.export({ format: 'jwk' });
    await ensureDirectory(dirname(path));
    // If another replica created it first, use theirs: every process must sign with the same key.
    await createFileExclusive(path, `${JSON.stringify(jwk)}\n`, 0o600);
    text = await readFile(path, 'utf8');
  }
  return fromPrivateJwk(JSON.parse(text) as JsonWebKey);
}

/** Reads a public key for verification from a JWK or PEM file (a private JWK also works). */
export async function loadPublicKeyFile(path: string): Promise<KeyObject> {
  const text = await readFile(path, 'utf8');
  if (text.trimStart().startsWith('{')) {
    const jwk = JSON.parse(text) as JsonWebKey & { d?: string };
    const { d: _private, ...pub } = jwk;
    return createPublicKey({ key: pub, format: 'jwk' });
  }
  return createPublicKey(text);
}

/** Reads an Ed25519 private key for signing baselines and approvals (private JWK or PKCS#8 PEM). */
export async function loadPrivateKeyFile(path: string): Promise<KeyObject> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`cannot read ${path}: ${code === 'ENOENT' ? 'no such file (ENOENT)' : (code ?? (err as Error).message)}`, { cause: err });
  }
  // Say what is wrong in the user's terms: node's own errors (`The "key.d" property must be of type
  // string`, `DECODER routines::unsupported`) name neither the file nor the fix.
  const publicKey = `${path} is a public key; give the private key (keygate keygen writes it to FILE, the public one to FILE.pub)`;
  const notAKey = `${path} is not a key: expected an Ed25519 private key (JWK or PKCS#8 PEM, as keygate keygen writes)`;
  let key: KeyObject;
  if (text.trimStart().startsWith('{')) {
    let jwk: JsonWebKey;
    try {
      jwk = JSON.parse(text) as JsonWebKey;
    } catch (err) {
      throw new Error(notAKey, { cause: err });
    }
    if (jwk && typeof jwk === 'object' && jwk.x !== undefined && jwk.d === undefined) throw new Error(publicKey);
    try {
      key = createPrivateKey({ key: jwk, format: 'jwk' });
    } catch (err) {
      throw new Error(notAKey, { cause: err });
    }
  } else {
    if (/-----BEGIN PUBLIC KEY-----/.test(text)) throw new Error(publicKey);
    try {
      key = createPrivateKey(text);
    } catch (err) {
      throw new Error(notAKey, { cause: err });
    }
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`${path} is not an Ed25519 private key`);
  return key;
}
