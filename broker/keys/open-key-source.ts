import { FileKeySource } from './file-keys.js';
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
