/**
 * Several test brokers in one test file, all trusting one test PKI, each in its
 * own subdirectory of one temporary directory. Call at the top of the file,
 * before its own hooks: `const fleet = testBrokers('keygate-x-')`. The beforeAll
 * hook this registers makes the directory and the PKI; the afterAll hook closes
 * every broker given to `add` (in order) and then removes the directory.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { RunningBroker } from '../../broker/broker.js';
import { createTestPki, type TestPki } from './pki.js';

export interface TestBrokers {
  /** The temporary directory (set in beforeAll). */
  readonly dir: string;
  /** The PKI the brokers trust and the test enclaves use (set in beforeAll). */
  readonly pki: TestPki;
  /** Closes `broker` after the file's tests; returns it. */
  add(broker: RunningBroker): RunningBroker;
}

export function testBrokers(prefix: string): TestBrokers {
  let dir: string | undefined;
  let pki: TestPki | undefined;
  const brokers: RunningBroker[] = [];
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), prefix));
    pki = await createTestPki(Date.now());
  });
  afterAll(async () => {
    for (const b of brokers) await b.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
  const set = <T>(value: T | undefined, name: string): T => {
    if (value === undefined) throw new Error(`testBrokers: ${name} is set in beforeAll`);
    return value;
  };
  return {
    get dir() {
      return set(dir, 'dir');
    },
    get pki() {
      return set(pki, 'pki');
    },
    add(broker) {
      brokers.push(broker);
      return broker;
    },
  };
}
