import { access } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { FileKeySource } from './file-keys.js';
import { loadPublicKeyFile } from '../signing-key.js';
import type { SharedKeys, SharedKeySettings, SharedKeySource } from './key-source.js';

/**
 * The one place that builds the shared-key source from config. The DynamoDB
 * implementation (and with it the AWS SDK) is loaded only when configured.
 */
export async function openKeySource(settings: SharedKeySettings, paths: { readonly signingKey: string; readonly challengeKey: string }): Promise<SharedKeySource> {
  switch (settings.kind) {
    case 'file':
      return new FileKeySource(paths);
    case 'dynamodb':
      return new (await import('./dynamodb-keys.js')).DynamoDbKeySource(settings);
  }
}

/** Loads (creating once) the keys every replica shares, and releases the source's clients. Throws SharedKeyError: the broker must not start. */
export async function loadSharedKeys(settings: SharedKeySettings, paths: { readonly signingKey: string; readonly challengeKey: string }): Promise<SharedKeys> {
  const source = await openKeySource(settings, paths);
  try {
    return await source.load();
  } finally {
    source.close();
  }
}

/**
 * The broker's public signing key for checking audit seals, read without creating anything: from the
 * state directory's key file, or decrypted (KMS) from the shared-key table. Undefined when there is none
 * yet; `from` says where it came from.
 */
export async function readSigningPublicKey(settings: SharedKeySettings, paths: { readonly signingKey: string }): Promise<{ key: KeyObject; from: string } | undefined> {
  if (settings.kind === 'file') {
    if (!(await access(paths.signingKey).then(() => true, () => false))) return undefined;
    return { key: await loadPublicKeyFile(paths.signingKey), from: `key file ${paths.signingKey}` };
  }
  const source = new (await import('./dynamodb-keys.js')).DynamoDbKeySource(settings);
  try {
    const key = await source.readSigningKey();
    return key && { key: key.publicKey, from: `shared keys in DynamoDB table ${settings.table} (KMS decrypt under ${settings.kmsKeyId}, kid ${key.kid})` };
  } finally {
    source.close();
  }
}
