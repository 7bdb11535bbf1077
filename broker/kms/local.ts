import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createFileExclusive, ensureDirectory } from '../../lib/durable-fs.js';
import { CiphertextError, type KeyProvider } from './provider.js';

const MAGIC = Buffer.from('KG1');
const IV_BYTES = 12;
const TAG_BYTES = 16;

function aad(secret: string): Buffer {
  return Buffer.from(`keygate/local/v1\0${secret}`, 'utf8');
}

/**
 * Loads the 32-byte key from `path`, creating it (mode 0600, exclusive
 * create, fsynced) on first use. A key file of the wrong size stops the
 * broker rather than silently replacing the key that existing ciphertexts need.
 */
export async function loadOrCreateKeyFile(path: string, bytes = 32): Promise<Buffer> {
  try {
    const key = await readFile(path);
    if (key.length !== bytes) throw new Error(`key file ${path} must hold exactly ${bytes} bytes, found ${key.length}`);
    return key;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await ensureDirectory(dirname(path));
  const key = randomBytes(bytes);
  if (await createFileExclusive(path, key, 0o600)) return key;
  // Another process created it first: everyone must use that one key.
  return loadOrCreateKeyFile(path, bytes);
}

/**
 * The embedded default provider: AES-256-GCM under a local key file. For
 * development and single-host use; production uses aws-kms.
 */
export class LocalKeyProvider implements KeyProvider {
  readonly name = 'local' as const;

  private constructor(private readonly key: Buffer) {}

  static async open(keyFile: string): Promise<LocalKeyProvider> {
    return new LocalKeyProvider(await loadOrCreateKeyFile(keyFile));
  }

  async encrypt(plaintext: Uint8Array, secret: string): Promise<string> {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    cipher.setAAD(aad(secret));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([MAGIC, iv, cipher.getAuthTag(), body]).toString('base64');
  }

  async decrypt(ciphertext: string, secret: string): Promise<Uint8Array> {
    const raw = Buffer.from(ciphertext, 'base64');
    if (raw.length < MAGIC.length + IV_BYTES + TAG_BYTES || !raw.subarray(0, MAGIC.length).equals(MAGIC)) {
      throw new CiphertextError('not a local-provider ciphertext', { providerError: 'InvalidCiphertext' });
    }
    const iv = raw.subarray(MAGIC.length, MAGIC.length + IV_BYTES);
    const tag = raw.subarray(MAGIC.length + IV_BYTES, MAGIC.length + IV_BYTES + TAG_BYTES);
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.key, iv);
      decipher.setAAD(aad(secret));
      decipher.setAuthTag(tag);
      return new Uint8Array(Buffer.concat([decipher.update(raw.subarray(MAGIC.length + IV_BYTES + TAG_BYTES)), decipher.final()]));
    } catch (cause) {
      // AES-GCM authentication failed: tampered, swapped onto another secret, or another key.
      throw new CiphertextError('ciphertext does not decrypt for this secret with the local key', { cause, providerError: 'AuthenticationFailed' });
    }
  }

  async check(): Promise<void> {}

  close(): void {}
}
