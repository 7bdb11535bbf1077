/** Broker config files and settings validation. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, DEFAULT_CONFIG, loadConfigFile, resolveConfig, type BrokerConfig } from '../../broker/config.js';

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
