/** The `gateway` config setting (issue 13): validated with CONFIG_INVALID, paths relative to the config file, no credentials in files. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfigFile, perBrokerParts, resolveConfig } from '../../broker/config.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'keygate-gwconf-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = { listen: '127.0.0.1:9443', certFile: '/gw.crt', keyFile: '/gw.key' };

function configError(gateway: unknown): ConfigError {
  try {
    resolveConfig({ gateway: gateway as never });
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('gateway config', () => {
  it('accepts a complete setting', () => {
    expect(resolveConfig({ gateway: { ...base, maxTokenSeconds: 60, maxBufferedBodyBytes: 1_048_576, budgets: { kind: 'dynamodb', table: 'keygate-nonces' } } }).gateway).toMatchObject({ maxTokenSeconds: 60, maxBufferedBodyBytes: 1_048_576 });
  });

  it.each([
    ['a missing key file', { listen: base.listen, certFile: '/c' }, /gateway\.keyFile is required/],
    ['an unknown key', { ...base, extra: 1 }, /gateway: unknown setting "extra"/],
    ['a token lifetime out of range', { ...base, maxTokenSeconds: 0 }, /gateway\.maxTokenSeconds/],
    ['a body memory cap out of range', { ...base, maxBufferedBodyBytes: 10 }, /gateway\.maxBufferedBodyBytes/],
    ['a bad budget backend', { ...base, budgets: { kind: 'redis' } }, /gateway\.budgets/],
    ['a budget table without a name', { ...base, budgets: { kind: 'dynamodb' } }, /gateway\.budgets\.table/],
  ])('refuses %s with CONFIG_INVALID', (_what, gateway, message) => {
    const err = configError(gateway);
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toMatch(message);
  });

  it('with a shared store, memory budgets are named as per-broker state (the broker warns at start)', () => {
    const store = { kind: 'dynamodb' as const, table: 'keygate-store' };
    expect(perBrokerParts(resolveConfig({ store, gateway: base }))).toContain('gateway budgets (each broker counts its own calls: N replicas allow N times the budget)');
    expect(perBrokerParts(resolveConfig({ store, gateway: { ...base, budgets: { kind: 'dynamodb', table: 'keygate-nonces' } } })).join()).not.toContain('gateway');
  });

  it('a config file: certFile, keyFile and upstreamCaFile are relative to it; budget credentials are refused', async () => {
    const file = join(dir, 'broker.json');
    writeFileSync(file, JSON.stringify({ gateway: { listen: '127.0.0.1:0', certFile: 'gw.crt', keyFile: 'gw.key', upstreamCaFile: 'ca.pem' } }));
    expect((await loadConfigFile(file)).gateway).toEqual({ listen: '127.0.0.1:0', certFile: join(dir, 'gw.crt'), keyFile: join(dir, 'gw.key'), upstreamCaFile: join(dir, 'ca.pem') });
    writeFileSync(file, JSON.stringify({ gateway: { ...base, budgets: { kind: 'dynamodb', table: 'ttt', credentials: { accessKeyId: 'a', secretAccessKey: 'b' } } } }));
    await expect(loadConfigFile(file)).rejects.toMatchObject({ code: 'CONFIG_INVALID' });
  });
});
