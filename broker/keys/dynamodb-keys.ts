import { generateKeyPairSync, randomBytes, type JsonWebKey } from 'node:crypto';
import { ConditionalCheckFailedException, DynamoDBClient, PutItemCommand, QueryCommand } from '@aws-sdk/client-dynamodb';
import { DecryptCommand, EncryptCommand, KMSClient } from '@aws-sdk/client-kms';
import { fromPrivateJwk } from '../signing-key.js';
import { CHALLENGE_KEY_BYTES, SharedKeyError, type SharedKeyName, type SharedKeys, type SharedKeySettings, type SharedKeySource } from './key-source.js';

export type DynamoDbKeySettings = Extract<SharedKeySettings, { kind: 'dynamodb' }>;

/** The item of key `name`. A constant `sk` lets the item live in a table keyed by `pk` alone or by `pk` + `sk`. */
export function keyItemKey(name: SharedKeyName): { pk: string; sk: string } {
  return { pk: `key#${name}`, sk: 'key' };
}

/** The KMS encryption context of key `name`: a ciphertext moved to another purpose does not decrypt. */
export function keyEncryptionContext(name: SharedKeyName): Record<string, string> {
  return { 'keygate:purpose': name };
}

/** KMS refusing the ciphertext itself (wrong context, wrong key, corrupted): the stored key is not usable, retrying will not help. */
const REJECTED = new Set(['InvalidCiphertextException', 'IncorrectKeyException']);

/**
 * Shared keys as items in a DynamoDB table, the key material encrypted under
 * a KMS key with an encryption context naming its purpose. The first replica
 * to start generates a key (node:crypto), encrypts it with KMS and writes it
 * with a conditional PutItem (attribute_not_exists): of several replicas
 * racing, one write wins and every loser reads the winner's item and uses
 * that key. Loading decrypts under the same context. Any DynamoDB or KMS
 * failure throws SharedKeyError: the broker does not start without its keys.
 */
export class DynamoDbKeySource implements SharedKeySource {
  readonly #settings: DynamoDbKeySettings;
  readonly #ddb: DynamoDBClient;
  readonly #kms: KMSClient;

  constructor(settings: DynamoDbKeySettings) {
    this.#settings = settings;
    const common = {
      ...(settings.region ? { region: settings.region } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      ...(settings.credentials ? { credentials: settings.credentials } : {}),
      maxAttempts: 3,
    };
    this.#ddb = new DynamoDBClient(common);
    this.#kms = new KMSClient(common);
  }

  async load(): Promise<SharedKeys> {
    const [signing, challengeKey] = await Promise.all([
      this.#material('broker-signing', () => Buffer.from(JSON.stringify(generateKeyPairSync('ed25519').privateKey.export({ format: 'jwk' })))),
      this.#material('challenge-mac', () => randomBytes(CHALLENGE_KEY_BYTES)),
    ]);
    if (challengeKey.length !== CHALLENGE_KEY_BYTES) throw this.#rejected('challenge-mac', `holds ${challengeKey.length} bytes, not ${CHALLENGE_KEY_BYTES}`);
    let signingKey: SharedKeys['signingKey'];
    try {
      signingKey = await fromPrivateJwk(JSON.parse(signing.toString('utf8')) as JsonWebKey);
    } catch (err) {
      throw this.#rejected('broker-signing', `is not an Ed25519 private JWK (${(err as Error).message})`, err);
    }
    return { signingKey, challengeKey };
  }

  /**
   * The broker signing key as stored, never creating it (an auditor checking seals): undefined when no
   * replica has created it yet. Needs DynamoDB Query and KMS Decrypt of that one item only.
   */
  async readSigningKey(): Promise<SharedKeys['signingKey'] | undefined> {
    const stored = await this.#read('broker-signing');
    if (!stored) return undefined;
    const material = await this.#decrypt('broker-signing', stored);
    try {
      return await fromPrivateJwk(JSON.parse(material.toString('utf8')) as JsonWebKey);
    } catch (err) {
      throw this.#rejected('broker-signing', `is not an Ed25519 private JWK (${(err as Error).message})`, err);
    } finally {
      material.fill(0);
    }
  }

  close(): void {
    this.#ddb.destroy();
    this.#kms.destroy();
  }

  #deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.timeout(this.#settings.requestTimeoutMs ?? 10_000) };
  }

  #rejected(name: SharedKeyName, problem: string, cause?: unknown): SharedKeyError {
    return new SharedKeyError('SHARED_KEY_REJECTED', `shared key ${name} in table ${this.#settings.table} ${problem}`, { cause, backendError: 'Malformed' });
  }

  #unavailable(what: string, err: unknown): SharedKeyError {
    const backendError = (err as { name?: string }).name || 'Error';
    return new SharedKeyError('SHARED_KEY_UNAVAILABLE', `shared keys: ${what} failed (${backendError}); the broker cannot start without them`, { cause: err, backendError });
  }

  /** The decrypted material of key `name`, created by `generate` if no replica has created it yet. */
  async #material(name: SharedKeyName, generate: () => Buffer): Promise<Buffer> {
    const stored = await this.#read(name);
    if (stored) return this.#decrypt(name, stored);
    const plaintext = generate();
    let ciphertext: Uint8Array;
    try {
      const out = await this.#kms.send(new EncryptCommand({ KeyId: this.#settings.kmsKeyId, Plaintext: plaintext, EncryptionContext: keyEncryptionContext(name) }), this.#deadline());
      if (!out.CiphertextBlob) throw new Error('KMS returned no ciphertext');
      ciphertext = out.CiphertextBlob;
    } catch (err) {
      throw this.#unavailable(`KMS Encrypt of ${name} under ${this.#settings.kmsKeyId}`, err);
    } finally {
      plaintext.fill(0);
    }
    const { pk, sk } = keyItemKey(name);
    try {
      await this.#ddb.send(
        new PutItemCommand({
          TableName: this.#settings.table,
          Item: { pk: { S: pk }, sk: { S: sk }, purpose: { S: name }, ciphertext: { B: ciphertext }, kmsKeyId: { S: this.#settings.kmsKeyId }, createdAt: { S: new Date().toISOString() } },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
        this.#deadline(),
      );
    } catch (err) {
      if (!(err instanceof ConditionalCheckFailedException || (err as { name?: string }).name === 'ConditionalCheckFailedException')) {
        throw this.#unavailable(`DynamoDB PutItem of ${name} in ${this.#settings.table}`, err);
      }
      // Another replica created it first: everyone must use that one key.
    }
    // Whoever won, use what the table holds (read back consistently), never the local copy.
    const winner = await this.#read(name);
    if (!winner) throw this.#rejected(name, 'vanished right after it was written');
    return this.#decrypt(name, winner);
  }

  /** The stored ciphertext of key `name` (consistent read), or undefined when there is none yet. */
  async #read(name: SharedKeyName): Promise<Uint8Array | undefined> {
    // Query on pk, not GetItem: works whether the table's key is pk alone or pk + sk.
    let items;
    try {
      items = (
        await this.#ddb.send(
          new QueryCommand({
            TableName: this.#settings.table,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': { S: keyItemKey(name).pk } },
            ConsistentRead: true,
          }),
          this.#deadline(),
        )
      ).Items;
    } catch (err) {
      throw this.#unavailable(`DynamoDB Query of ${name} in ${this.#settings.table}`, err);
    }
    // Only the exact item counts. In a pk + sk table other items can share the pk (an older key of the same
    // purpose restored from a backup, a hand-made copy); taking the first in sort order would silently load
    // whichever sorts lowest, so any other item under this pk refuses the start (fail closed) until removed.
    const { sk } = keyItemKey(name);
    const exact = (items ?? []).filter((i) => i.sk?.S === sk);
    if ((items ?? []).length > exact.length) {
      throw this.#rejected(name, `has ${(items ?? []).length - exact.length} other item(s) under pk "${keyItemKey(name).pk}" besides sk "${sk}"; only that one is keygate's: remove the others`);
    }
    const item = exact[0];
    if (!item) return undefined;
    const blob = item.ciphertext?.B;
    if (!blob || item.purpose?.S !== name) throw this.#rejected(name, 'is malformed (no ciphertext, or another purpose)');
    return blob;
  }

  async #decrypt(name: SharedKeyName, ciphertext: Uint8Array): Promise<Buffer> {
    try {
      const out = await this.#kms.send(
        new DecryptCommand({ CiphertextBlob: ciphertext, KeyId: this.#settings.kmsKeyId, EncryptionContext: keyEncryptionContext(name) }),
        this.#deadline(),
      );
      if (!out.Plaintext) throw new Error('KMS returned no plaintext');
      return Buffer.from(out.Plaintext);
    } catch (err) {
      const backendError = (err as { name?: string }).name || 'Error';
      if (REJECTED.has(backendError)) {
        throw new SharedKeyError('SHARED_KEY_REJECTED', `shared key ${name} in table ${this.#settings.table}: KMS refused to decrypt it under purpose "${name}" with key ${this.#settings.kmsKeyId} (${backendError})`, { cause: err, backendError });
      }
      throw this.#unavailable(`KMS Decrypt of ${name}`, err);
    }
  }
}
