/** Broker config files and settings validation. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, DEFAULT_CONFIG, loadConfigFile, perBrokerParts, resolveConfig, type BrokerConfig } from '../../broker/config.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-config-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function configFile(name: string, content: Record<string, unknown>): string {
  const file = join(dir, name);
  writeFileSync(file, JSON.stringify(content));
  return file;
}

describe('loadConfigFile', () => {
  it.each([true, false])('rejects "dev": %s (development trust comes only from the --dev flag)', async (value) => {
    const file = configFile(`dev-${value}.json`, { store: 'store', dev: value });
    const err = await loadConfigFile(file).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/"dev"/);
    expect((err as Error).message).toMatch(/--dev/);
  });

  it('reads a file without "dev" and resolves its paths relative to it', async () => {
    const config = await loadConfigFile(configFile('ok.json', { store: 'store', listen: '127.0.0.1:0' }));
    expect(config).toEqual({ store: join(dir, 'store'), listen: '127.0.0.1:0' });
    expect(config).not.toHaveProperty('dev');
  });
});

describe('resolveConfig', () => {
  it('keeps secret names out of metrics unless asked', () => {
    expect(DEFAULT_CONFIG.metricsSecretLabels).toBe(false);
    expect(resolveConfig({}).metricsSecretLabels).toBe(false);
    expect(resolveConfig({ metricsSecretLabels: true }).metricsSecretLabels).toBe(true);
    expect(() => resolveConfig({ metricsSecretLabels: 'yes' } as unknown as Partial<BrokerConfig>)).toThrow(/metricsSecretLabels/);
  });
});

describe('resolveConfig: audit file size', () => {
  it('bounds auditMaxFileBytes: the live file is read whole at start, and a string cannot exceed ~512 MiB', () => {
    expect(resolveConfig({}).auditMaxFileBytes).toBe(64 * 1024 * 1024);
    expect(resolveConfig({ auditMaxFileBytes: 256 * 1024 * 1024 }).auditMaxFileBytes).toBe(256 * 1024 * 1024);
    for (const bad of [4095, 256 * 1024 * 1024 + 1, 1e12, 1.5, -1]) expect(() => resolveConfig({ auditMaxFileBytes: bad })).toThrow(/auditMaxFileBytes must be an integer in 4096\.\.268435456/);
  });
});

describe('resolveConfig: HTTP server limits', () => {
  it('defaults to headers 10 s, request 30 s, keep-alive 5 s, 1024 connections', () => {
    expect(resolveConfig({})).toMatchObject({ headersTimeoutSeconds: 10, requestTimeoutSeconds: 30, keepAliveTimeoutSeconds: 5, maxConnections: 1024 });
  });

  it.each([
    [{ headersTimeoutSeconds: 0 }, /headersTimeoutSeconds/],
    [{ requestTimeoutSeconds: -1 }, /requestTimeoutSeconds/],
    [{ keepAliveTimeoutSeconds: 0 }, /keepAliveTimeoutSeconds/],
    [{ keepAliveTimeoutSeconds: Number.NaN }, /keepAliveTimeoutSeconds/],
    [{ headersTimeoutSeconds: 40, requestTimeoutSeconds: 30 }, /must not exceed requestTimeoutSeconds/],
    [{ maxConnections: 0 }, /maxConnections/],
    [{ maxConnections: 1.5 }, /maxConnections/],
    [{ maxConnections: '10' }, /maxConnections/],
  ] as Array<[Record<string, unknown>, RegExp]>)('rejects %o', (layer, message) => {
    expect(() => resolveConfig(layer as Partial<BrokerConfig>)).toThrow(ConfigError);
    expect(() => resolveConfig(layer as Partial<BrokerConfig>)).toThrow(message);
  });

  it('accepts fractions of a second (tests use short timeouts)', () => {
    expect(resolveConfig({ headersTimeoutSeconds: 0.5, requestTimeoutSeconds: 1, keepAliveTimeoutSeconds: 0.25 }).headersTimeoutSeconds).toBe(0.5);
  });
});

describe('the store setting', () => {
  it('takes a directory, { kind: "file", dir } (resolved relative to the config file, as the directory) or a DynamoDB table', async () => {
    expect(resolveConfig({ store: '/var/keygate' }).store).toBe('/var/keygate');
    const file = await loadConfigFile(configFile('store-file.json', { store: { kind: 'file', dir: 'bindings-store' } }));
    expect(resolveConfig(file).store).toBe(join(dir, 'bindings-store'));
    const ddb = { kind: 'dynamodb', table: 'keygate', region: 'eu-west-1', endpoint: 'http://127.0.0.1:5000', consistency: { maxStalenessMs: 0 } } as const;
    expect(resolveConfig({ store: ddb }).store).toEqual(ddb);
    const loaded = await loadConfigFile(configFile('store-ddb.json', { store: { kind: 'dynamodb', table: 'keygate' } }));
    expect(resolveConfig(loaded).store).toEqual({ kind: 'dynamodb', table: 'keygate' });
  });

  it.each([
    [{ kind: 's3', bucket: 'x' }, /store\.kind must be "file" or "dynamodb", not "s3"/],
    [{ table: 'keygate' }, /store\.kind must be "file" or "dynamodb"$/],
    [{ kind: 'file' }, /store\.dir must be a directory/],
    [{ kind: 'file', dir: 'x', table: 't' }, /unknown setting "table" for kind "file"/],
    [{ kind: 'dynamodb' }, /store\.table must be a DynamoDB table name/],
    [{ kind: 'dynamodb', table: 'a b' }, /store\.table must be a DynamoDB table name/],
    [{ kind: 'dynamodb', table: 'keygate', tabel: 'x' }, /unknown setting "tabel" for kind "dynamodb"/],
    [{ kind: 'dynamodb', table: 'keygate', region: 'EU WEST' }, /store\.region must be an AWS region name/],
    [{ kind: 'dynamodb', table: 'keygate', endpoint: 'ftp://x' }, /store\.endpoint must be an http\(s\) URL/],
    [{ kind: 'dynamodb', table: 'keygate', consistency: { maxStalenessMs: -1 } }, /maxStalenessMs must be an integer number of milliseconds in 0\.\.60000/],
    [{ kind: 'dynamodb', table: 'keygate', consistency: { maxStaleness: 5 } }, /store\.consistency must be an object with only "maxStalenessMs"/],
    [42, /store must be a directory or an object/],
    ['', /store must not be empty/],
  ])('refuses %j with a clear CONFIG_INVALID', (store, message) => {
    const err = (() => {
      try {
        resolveConfig({ store: store as BrokerConfig['store'] });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(ConfigError);
    expect(err).toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(message) });
  });
});

describe('examples/broker-dynamodb.json', () => {
  it('is a complete config for several replicas: every shared component on DynamoDB, keys under alias/keygate, nothing AWS-specific but the SDK environment', async () => {
    const file = fileURLToPath(new URL('../../examples/broker-dynamodb.json', import.meta.url));
    const config = resolveConfig(await loadConfigFile(file));
    expect(config.store).toMatchObject({ kind: 'dynamodb', table: 'keygate' });
    expect(config.nonces).toMatchObject({ kind: 'dynamodb' });
    expect(config.quarantine).toMatchObject({ kind: 'dynamodb' });
    expect(config.keys).toMatchObject({ kind: 'dynamodb', kmsKeyId: 'alias/keygate' });
    expect(config.audit).toEqual({ kind: 'dynamodb', table: 'keygate-audit', archive: { bucket: 'keygate-audit-archive', prefix: 'audit/', retentionDays: 365 } });
    expect(perBrokerParts(config)).toEqual([]);
    // Region, endpoint and credentials come from the AWS SDK environment, so the same file runs against moto and AWS.
    expect(JSON.stringify(await loadConfigFile(file))).not.toMatch(/region|endpoint|credentials/);
  });
});

describe('perBrokerParts', () => {
  it('names what replicas on a shared store would not share, so the broker can warn at start', () => {
    expect(perBrokerParts(resolveConfig({}))).toEqual([]);
    const dynamo = { kind: 'dynamodb', table: 'keygate' } as const;
    expect(perBrokerParts(resolveConfig({ store: dynamo }))).toEqual([
      'nonces (single use per broker, not across replicas)',
      'quarantine (per broker)',
      'keys (each broker signs with its own key under stateDir)',
      'audit (each broker writes its own file under stateDir; lost with the instance)',
    ]);
    const shared = { store: dynamo, nonces: { kind: 'dynamodb', table: 'shared' }, quarantine: { kind: 'dynamodb', table: 'shared' }, keys: { kind: 'dynamodb', table: 'keygate', kmsKeyId: 'alias/keygate' } } as const;
    expect(perBrokerParts(resolveConfig(shared))).toEqual(['audit (each broker writes its own file under stateDir; lost with the instance)']);
    expect(perBrokerParts(resolveConfig({ ...shared, audit: { kind: 'dynamodb', table: 'keygate-audit' } }))).toEqual([]);
  });
});

describe('the audit setting', () => {
  it('defaults to the file log, and takes a DynamoDB table with a replica id, batch size and S3 archive', () => {
    expect(resolveConfig({}).audit).toEqual({ kind: 'file' });
    const audit = { kind: 'dynamodb', table: 'keygate-audit', replicaId: 'replica-1', maxBatchItems: 25, archive: { bucket: 'keygate-audit.archive', prefix: 'keygate/audit/', retentionDays: 2555 } } as const;
    expect(resolveConfig({ audit }).audit).toEqual(audit);
  });

  it.each([
    [{ kind: 's3' }, /audit\.kind must be "file" or "dynamodb"/],
    [{ kind: 'file', table: 'x' }, /audit: unknown setting "table" for kind "file"/],
    [{ kind: 'dynamodb' }, /audit\.table must be a DynamoDB table name/],
    [{ kind: 'dynamodb', table: 'a' }, /audit\.table must be a DynamoDB table name/],
    [{ kind: 'dynamodb', table: 'audit', replica: 'x' }, /audit: unknown setting "replica"/],
    [{ kind: 'dynamodb', table: 'audit', replicaId: 'a/b' }, /audit\.replicaId must be 1-64/],
    [{ kind: 'dynamodb', table: 'audit', replicaId: 'x'.repeat(65) }, /audit\.replicaId must be 1-64/],
    [{ kind: 'dynamodb', table: 'audit', maxBatchItems: 2 }, /audit\.maxBatchItems must be an integer in 3\.\.100/],
    [{ kind: 'dynamodb', table: 'audit', maxBatchItems: 101 }, /audit\.maxBatchItems must be an integer in 3\.\.100/],
    [{ kind: 'dynamodb', table: 'audit', archive: 'bucket' }, /audit\.archive must be an object/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'Bucket', retentionDays: 1 } }, /audit\.archive\.bucket must be an S3 bucket name/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'ab', retentionDays: 1 } }, /audit\.archive\.bucket must be an S3 bucket name/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'b'.repeat(64), retentionDays: 1 } }, /audit\.archive\.bucket must be an S3 bucket name/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'bucket', retentionDays: 0 } }, /audit\.archive\.retentionDays must be an integer/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'bucket', retentionDays: 36_501 } }, /audit\.archive\.retentionDays must be an integer/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'bucket', retentionDays: 1.5 } }, /audit\.archive\.retentionDays must be an integer/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'bucket', retentionDays: 1, prefix: '/abs' } }, /audit\.archive\.prefix must be a string/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'bucket', retentionDays: 1, prefix: 'p'.repeat(257) } }, /audit\.archive\.prefix must be a string/],
    [{ kind: 'dynamodb', table: 'audit', archive: { bucket: 'bucket', retentionDays: 1, mode: 'governance' } }, /audit\.archive: unknown setting "mode"/],
  ])('refuses %j with a clear CONFIG_INVALID', (audit, message) => {
    expect(() => resolveConfig({ audit: audit as unknown as BrokerConfig['audit'] })).toThrow(expect.objectContaining({ code: 'CONFIG_INVALID', message: expect.stringMatching(message) }));
  });

  it('takes no credentials from a config file, for the table or the archive', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'keygate-audit-config-'));
    try {
      const creds = { accessKeyId: 'a', secretAccessKey: 'b' };
      writeFileSync(join(dir, 'a.json'), JSON.stringify({ audit: { kind: 'dynamodb', table: 'audit', credentials: creds } }));
      await expect(loadConfigFile(join(dir, 'a.json'))).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/audit\.credentials is not allowed in a config file/) });
      writeFileSync(join(dir, 'b.json'), JSON.stringify({ audit: { kind: 'dynamodb', table: 'audit', archive: { bucket: 'bucket', retentionDays: 1, credentials: creds } } }));
      await expect(loadConfigFile(join(dir, 'b.json'))).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringMatching(/audit\.archive\.credentials is not allowed in a config file/) });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
