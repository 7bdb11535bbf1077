/** A request body means one thing: repeated keys are refused in JSON as in CBOR (issue 9, item 5). */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import type { RunningBroker } from '../../broker/broker.js';
import { bindSecret, pcrSet } from '../../broker/admin.js';
import { parseJsonStrict } from '../../broker/strict-json.js';
import { createTestPki, type TestPki } from '../support/pki.js';
import { APPROVED, TestEnclave, h } from '../support/enclave.js';
import { startTestBroker } from '../support/broker.js';
import { cbor } from '../support/document.js';
import { duplicateKeyOf } from '../support/strict-json.js';

const duplicateOf = duplicateKeyOf;

describe('strict JSON parsing', () => {
  it.each([
    ['top level', '{"names":["a"],"names":["b"]}', 'names'],
    ['escaped spelling of the same key', '{"names":["a"],"n\\u0061mes":["b"]}', 'names'],
    ['nested object', '{"a":{"x":1,"y":{"z":1,"z":2}}}', 'z'],
    ['object inside an array', '{"a":[1,{"k":"v","k":"w"}]}', 'k'],
    ['escaped quote and backslash inside keys', '{"a\\"b\\\\":1,"a\\u0022b\\u005c":2}', 'a"b\\'],
    ['after a string value that looks like a key', '{"v":"\\"k\\":","k":1,"k":2}', 'k'],
  ])('refuses a repeated key: %s', (_name, text, key) => {
    expect(duplicateOf(text)).toBe(key);
  });

  it.each([
    ['same key in sibling objects', '{"a":{"k":1},"b":{"k":2}}'],
    ['same key at different depths', '{"k":{"k":{"k":[{"k":1}]}}}'],
    ['key text inside string values', '{"names":"names","x":["names","names"]}'],
    ['keys differing only in case or escapes of other characters', '{"Names":1,"names":2,"n\\u00e1mes":3}'],
    ['empty containers', '{"a":{},"b":[],"c":[{}],"d":[[]]}'],
  ])('accepts distinct keys: %s', (_name, text) => {
    expect(duplicateOf(text)).toBeUndefined();
    expect(parseJsonStrict(text)).toEqual(JSON.parse(text));
  });

  it('throws SyntaxError for text that is not JSON', () => {
    expect(() => parseJsonStrict('{"a":1,')).toThrow(SyntaxError);
  });

  it('agrees with JSON.parse on JSON without repeated keys', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const text = JSON.stringify(value);
        expect(parseJsonStrict(text)).toEqual(JSON.parse(text));
      }),
      { numRuns: 300 },
    );
  });

  it('finds a repeated key in any object at any depth', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue(), { minKeys: 1 }), fc.nat(4), (obj, depth) => {
        const key = Object.keys(obj)[0]!;
        let text = `{${JSON.stringify(key)}:0,${JSON.stringify(obj).slice(1)}`;
        for (let i = 0; i < depth; i++) text = i % 2 ? `[1,${text}]` : `{"w":${text}}`;
        expect(duplicateOf(text)).toBe(key);
      }),
      { numRuns: 300 },
    );
  });
});

describe('POST /v1/secrets with repeated keys', () => {
  let dir: string;
  let pki: TestPki;
  let broker: RunningBroker;
  let enclave: TestEnclave;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'keygate-body-'));
    pki = await createTestPki(Date.now());
    broker = await startTestBroker(dir, [pki.root.pem]);
    const local = broker.providers.get('local')!;
    const value = new TextEncoder().encode('v');
    await bindSecret(broker.store, local, { secret: 'mine', value, allow: [pcrSet(APPROVED)], provider: 'local' });
    await bindSecret(broker.store, local, { secret: 'theirs', value, allow: [pcrSet({ ...APPROVED, 0: h(0x99) })], provider: 'local' });
    enclave = new TestEnclave(pki, broker.url);
  });
  afterAll(async () => {
    await broker?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const post = async (body: string | Uint8Array, type: string): Promise<{ status: number; code: string | undefined; secrets: unknown }> => {
    const res = await fetch(`${broker.url}/v1/secrets`, { method: 'POST', headers: { 'content-type': type }, body });
    const json = (await res.json()) as { error?: { code: string }; secrets?: unknown };
    return { status: res.status, code: json.error?.code, secrets: json.secrets };
  };
  const attestation = async (): Promise<string> => Buffer.from(enclave.document(await enclave.challenge())).toString('base64');

  it('a well-formed JSON body is released (the control)', async () => {
    const res = await post(JSON.stringify({ attestation: await attestation(), names: ['mine'] }), 'application/json');
    expect(res.status).toBe(200);
  });

  it.each([
    ['names twice', (a: string) => `{"names":["theirs"],"attestation":"${a}","names":["mine"]}`],
    ['names twice, once escaped', (a: string) => `{"names":["theirs"],"attestation":"${a}","n\\u0061mes":["mine"]}`],
    ['attestation twice', (a: string) => `{"attestation":"AAAA","names":["mine"],"attestation":"${a}"}`],
    ['a repeated key in a nested object', (a: string) => `{"attestation":"${a}","names":["mine"],"x":{"y":1,"y":2}}`],
  ])('%s -> 400 BAD_REQUEST, nothing released', async (_name, body) => {
    const res = await post(body(await attestation()), 'application/json');
    expect([res.status, res.code, res.secrets]).toEqual([400, 'BAD_REQUEST', undefined]);
  });

  it('a CBOR body with names twice -> 400 BAD_REQUEST, nothing released', async () => {
    const doc = enclave.document(await enclave.challenge());
    // map(3) { "names": ["theirs"], "attestation": bytes, "names": ["mine"] }, assembled by hand.
    const body = Buffer.concat([Uint8Array.of(0xa3), cbor('names'), cbor(['theirs']), cbor('attestation'), cbor(doc), cbor('names'), cbor(['mine'])]);
    const res = await post(body, 'application/cbor');
    expect([res.status, res.code, res.secrets]).toEqual([400, 'BAD_REQUEST', undefined]);
  });

});
