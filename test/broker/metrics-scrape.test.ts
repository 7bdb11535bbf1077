/**
 * /metrics through prom-client: the existing keygate_* names and labels, the process, GC and
 * event-loop metrics, valid Prometheus text, and separate counts for two brokers in one process.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { RunningBroker } from '../../broker/broker.js';
import { startTestBrokerWithDb } from '../support/broker.js';
import { testBrokers } from '../support/test-brokers.js';
import { TestEnclave } from '../support/enclave.js';

const fleet = testBrokers('keygate-metrics-scrape-');

interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"`;
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*)?\\})? (-?(?:[0-9.]+(?:e[+-]?[0-9]+)?|[Nn]a[Nn]|\\+Inf|-Inf))$`); // NaN as Prometheus reads it (Go's ParseFloat: any case; prom-client writes Nan)

/**
 * A strict reader of the Prometheus text format (0.0.4): every line is a HELP, a TYPE or a sample;
 * every sample belongs to a family whose TYPE came before it; no family is declared twice.
 */
function parseExposition(text: string): { types: Map<string, string>; samples: Sample[] } {
  expect(text.endsWith('\n')).toBe(true);
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const help = new RegExp(`^# HELP (${NAME}) .*$`).exec(line);
    if (help) continue;
    const type = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
    if (type) {
      expect(types.has(type[1]!), `family ${type[1]} declared twice`).toBe(false);
      types.set(type[1]!, type[2]!);
      continue;
    }
    const m = SAMPLE.exec(line);
    expect(m, `not a Prometheus sample line: ${JSON.stringify(line)}`).not.toBeNull();
    const name = m![1]!;
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    expect(types.has(family), `sample ${name} before its TYPE`).toBe(true);
    const labels: Record<string, string> = {};
    for (const l of (m![2] ?? '').matchAll(new RegExp(LABEL, 'g'))) labels[l[1]!] = l[2]!;
    samples.push({ name, labels, value: Number(m!.at(-1)) });
  }
  return { types, samples };
}

const value = (samples: readonly Sample[], name: string, labels: Record<string, string> = {}): number | undefined =>
  samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;

async function scrape(b: RunningBroker): Promise<{ types: Map<string, string>; samples: Sample[]; contentType: string }> {
  const res = await fetch(`${b.url}/metrics`);
  expect(res.status).toBe(200);
  return { ...parseExposition(await res.text()), contentType: res.headers.get('content-type') ?? '' };
}

describe('/metrics (prom-client)', () => {
  it('keeps the keygate_* names and labels, adds process, GC and event-loop metrics; two brokers in one process count separately', async () => {
    const a = await startTestBrokerWithDb(join(fleet.dir, 'a'), [fleet.pki.root.pem]);
    fleet.add(a);
    const b = await startTestBrokerWithDb(join(fleet.dir, 'b'), [fleet.pki.root.pem]);
    fleet.add(b);
    const ea = new TestEnclave(fleet.pki, a.url);
    const eb = new TestEnclave(fleet.pki, b.url);
    for (let i = 0; i < 2; i++) expect((await ea.request(['db'])).status).toBe(200);
    expect((await ea.request(['nope'])).body.error?.code).toBe('POLICY_DENIED');
    expect((await eb.request(['db'])).status).toBe(200);
    for (let i = 0; i < 3; i++) expect((await eb.request(['nope'])).body.error?.code).toBe('POLICY_DENIED');

    const ma = await scrape(a);
    const mb = await scrape(b);
    expect(ma.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    for (const m of [ma, mb]) {
      expect(Object.fromEntries([...m.types].filter(([n]) => n.startsWith('keygate_')))).toEqual({
        keygate_releases_total: 'counter',
        keygate_denials_total: 'counter',
        keygate_verify_seconds: 'histogram',
        keygate_kms_seconds: 'histogram',
        keygate_release_request_seconds: 'histogram',
        keygate_secret_cache_total: 'counter',
        keygate_store_problems_total: 'counter',
        keygate_connections_dropped_total: 'counter',
      });
      expect(m.types.get('process_cpu_seconds_total')).toBe('counter');
      expect(m.types.get('nodejs_eventloop_lag_seconds')).toBe('gauge');
      expect(m.types.get('nodejs_gc_duration_seconds')).toBe('histogram');
      expect(m.types.get('process_resident_memory_bytes')).toBe('gauge');
      expect(value(m.samples, 'process_cpu_seconds_total')).toBeGreaterThan(0);
      expect(value(m.samples, 'keygate_store_problems_total')).toBe(0);
      expect(value(m.samples, 'keygate_connections_dropped_total')).toBe(0);
    }
    // Each broker its own counts.
    expect(value(ma.samples, 'keygate_releases_total')).toBe(2);
    expect(value(mb.samples, 'keygate_releases_total')).toBe(1);
    expect(value(ma.samples, 'keygate_denials_total', { code: 'POLICY_DENIED' })).toBe(1);
    expect(value(mb.samples, 'keygate_denials_total', { code: 'POLICY_DENIED' })).toBe(3);
    expect(value(ma.samples, 'keygate_verify_seconds_count')).toBe(3);
    expect(value(mb.samples, 'keygate_verify_seconds_count')).toBe(4);
    expect(value(ma.samples, 'keygate_verify_seconds_bucket', { le: '+Inf' })).toBe(3);
    expect(value(ma.samples, 'keygate_release_request_seconds_count')).toBe(3);
    expect(value(ma.samples, 'keygate_secret_cache_total', { result: 'miss' })).toBe(1);
    expect(value(ma.samples, 'keygate_secret_cache_total', { result: 'hit' })).toBe(1);
    // No secret name on the unauthenticated listener (metricsSecretLabels is off).
    expect(ma.samples.some((s) => 'secret' in s.labels)).toBe(false);
  }, 120_000);
});
