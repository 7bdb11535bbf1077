import { loadOrCreateKeyFile } from '../kms/local.js';
import { loadOrCreateSigningKey } from '../signing-key.js';
import { CHALLENGE_KEY_BYTES, type SharedKeys, type SharedKeySource } from './key-source.js';

/**
 * The embedded default: key files under stateDir, created exclusively (the
 * first process to create one wins; replicas sharing the directory use it).
 */
export class FileKeySource implements SharedKeySource {
  constructor(private readonly paths: { readonly signingKey: string; readonly challengeKey: string }) {}

  async load(): Promise<SharedKeys> {
    const signingKey = await loadOrCreateSigningKey(this.paths.signingKey);
    return { signingKey, challengeKey: await loadOrCreateKeyFile(this.paths.challengeKey, CHALLENGE_KEY_BYTES) };
  }

  close(): void {}
}
