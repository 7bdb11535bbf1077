/**
 * `keygate store init` over existing resources weaker than what it creates,
 * and `keygate store copy` when its destination cannot be used: coded
 * refusals with exit 1 (and JSON with --json), never "exists" with exit 0 nor
 * an "internal error" (found in review).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateTableCommand, DynamoDBClient, UpdateTimeToLiveCommand } from '@aws-sdk/client-dynamodb';
import { cli, type Run } from '../support/cli.js';
import { closedPort, startMoto, uniqueName, type Moto } from '../support/moto.js';

let moto: Moto;
let savedEnv: NodeJS.ProcessEnv;
let dir: string;
beforeAll(async () => {
  moto = await startMoto();
  savedEnv = { ...process.env };
  Object.assign(process.env, moto.env);
  dir = mkdtempSync(join(tmpdir(), 'keygate-init-mismatch-'));
}, 120_000);
afterAll(async () => {
  process.env = savedEnv;
  await moto?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

let n = 0;
function config(body: Record<string, unknown>): string {
  const file = join(dir, `config-${++n}.json`);
  writeFileSync(file, JSON.stringify({ stateDir: join(dir, `state-${n}`), ...body }));
  return file;
}

function emptyFileStore(): string {
  const from = join(dir, `fs-${++n}`);
  mkdirSync(from);
  return from;
}

/** Exit 1, one JSON object on stdout carrying `code`, no stack trace, no "internal error". */
function expectJsonRefusal(r: Run, code: string): void {
  expect(r.stderr).not.toMatch(/\n\s+at |internal error/);
  expect(r.status).toBe(1);
  expect((JSON.parse(r.stdout) as { error: { code: string } }).error.code).toBe(code);
}

async function createTable(table: string, sortKey: boolean, ttlOn?: string): Promise<void> {
  const ddb = new DynamoDBClient({});
  try {
    await ddb.send(
      new CreateTableCommand({
        TableName: table,
        BillingMode: 'PAY_PER_REQUEST',
        AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }, ...(sortKey ? [{ AttributeName: 'sk', AttributeType: 'S' as const }] : [])],
        KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }, ...(sortKey ? [{ AttributeName: 'sk', KeyType: 'RANGE' as const }] : [])],
      }),
    );
    if (ttlOn) await ddb.send(new UpdateTimeToLiveCommand({ TableName: table, TimeToLiveSpecification: { AttributeName: ttlOn, Enabled: true } }));
  } finally {
    ddb.destroy();
  }
}

describe('keygate store copy: a destination that cannot be used', () => {
  it('a DynamoDB table that does not exist (store init not run): STORE_UNAVAILABLE, exit 1, JSON', async () => {
    const to = config({ store: { kind: 'dynamodb', table: uniqueName('missing') } });
    expectJsonRefusal(await cli(['store', 'copy', '--from', emptyFileStore(), '--to-config', to, '--json']), 'STORE_UNAVAILABLE');
  });

  it('DynamoDB unreachable: STORE_UNAVAILABLE, exit 1, JSON; the text form says nothing was copied', async () => {
    const to = config({ store: { kind: 'dynamodb', table: 'keygate', endpoint: `http://127.0.0.1:${await closedPort()}` } });
    expectJsonRefusal(await cli(['store', 'copy', '--from', emptyFileStore(), '--to-config', to, '--json']), 'STORE_UNAVAILABLE');
    const text = await cli(['store', 'copy', '--from', emptyFileStore(), '--to-config', to]);
    expect([text.status, text.stderr]).toEqual([1, expect.stringMatching(/^keygate store copy: STORE_UNAVAILABLE: .*nothing was copied\n$/)]);
  });
});

describe('keygate store init over weaker existing tables', () => {
  it('a store table keyed on pk alone is refused (TABLE_MISMATCH), not reported as existing', async () => {
    const table = uniqueName('wrong-key');
    await createTable(table, false);
    const r = await cli(['store', 'init', '--config', config({ store: { kind: 'dynamodb', table } })]);
    expect([r.status, r.stderr]).toEqual([1, expect.stringMatching(/^keygate store init: TABLE_MISMATCH: table \S+ exists with key schema \(pk HASH S\); keygate needs \(pk HASH S, sk RANGE S\)/)]);
  });

  it('an audit table with TTL on (here on the chain head attribute seq) is refused: audit items never expire', async () => {
    const audit = uniqueName('ttl-audit');
    await createTable(audit, true, 'seq');
    const r = await cli(['store', 'init', '--config', config({ store: { kind: 'dynamodb', table: uniqueName('s') }, audit: { kind: 'dynamodb', table: audit } })]);
    expect([r.status, r.stderr]).toEqual([1, expect.stringMatching(/TABLE_MISMATCH: table \S+ has TTL on "seq"; its items must never expire/)]);
  });

  it('a store table with TTL on v (the version and reserved-version items carry it) is refused', async () => {
    const table = uniqueName('ttl-store');
    await createTable(table, true, 'v');
    const r = await cli(['store', 'init', '--config', config({ store: { kind: 'dynamodb', table } })]);
    expect([r.status, r.stderr]).toEqual([1, expect.stringMatching(/TABLE_MISMATCH: table \S+ has TTL on "v"; keygate needs it on "ttl"/)]);
  });

  it('a nonce table with TTL on another attribute is refused; the right TTL is accepted again and again', async () => {
    const nonces = uniqueName('ttl-nonces');
    await createTable(nonces, false, 'expires');
    const r = await cli(['store', 'init', '--config', config({ store: { kind: 'dynamodb', table: uniqueName('s') }, nonces: { kind: 'dynamodb', table: nonces } })]);
    expect([r.status, r.stderr]).toEqual([1, expect.stringMatching(/TABLE_MISMATCH: table \S+ has TTL on "expires"; keygate needs it on "ttl"/)]);
    const fine = config({ store: { kind: 'dynamodb', table: uniqueName('s') }, nonces: { kind: 'dynamodb', table: uniqueName('nonces') }, audit: { kind: 'dynamodb', table: uniqueName('audit') } });
    for (let i = 0; i < 2; i++) {
      const ok = await cli(['store', 'init', '--config', fine]);
      expect(ok.status, ok.stderr).toBe(0);
      expect(ok.stdout).toMatch(/TTL enabled/);
      expect(ok.stdout).toMatch(/no TTL/);
    }
  });
});
