/** The dependency rules of design.md, checked on the sources. */
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir)).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(join(ROOT, path)).isDirectory()) return name === 'native' ? [] : sources(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1] ?? m[2]!);
}

function internalTargets(file: string): string[] {
  return imports(file)
    .filter((s) => s.startsWith('.'))
    .map((s) => relative(ROOT, resolve(dirname(join(ROOT, file)), s)));
}

/** Imports that load with the module (`import ... from`, `export ... from`), not `import()` on demand. */
function staticImports(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)(?!\s+type\b)[^'"]*?from\s+['"]([^'"]+)['"]|(?:^|\n)\s*import\s+['"]([^'"]+)['"]/g)].map((m) => m[1] ?? m[2]!);
}

/** Every project file and package a module loads with it, following static imports only. */
function staticGraph(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string): void => {
    if (files.has(file)) return;
    files.add(file);
    for (const spec of staticImports(file)) {
      if (spec.startsWith('.')) visit(relative(ROOT, resolve(dirname(join(ROOT, file)), spec)).replace(/\.js$/, '.ts'));
      else packages.add(spec);
    }
  };
  visit(entry);
  return { files, packages };
}

const HEAVY = /^(hono|@hono\/|@aws-sdk\/)/;

/** Names imported by value (not `import type`) from each internal module: `{ from, names }`. */
function valueImports(file: string): Array<{ from: string; names: string[] }> {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s+(type\s+)?\{([^}]*)\}\s*from\s+['"](\.[^'"]+)['"]/g)]
    .filter((m) => !m[1])
    .map((m) => ({
      from: relative(ROOT, resolve(dirname(join(ROOT, file)), m[3]!)),
      names: m[2]!.split(',').map((n) => n.trim()).filter((n) => n && !n.startsWith('type ')).map((n) => n.split(/\s+as\s+/)[0]!),
    }));
}

/** Project sources the broker, agent and shim consist of (the CLI is checked by its own rules). */
const runtimeSources = (): string[] => [...sources('broker'), ...sources('enclave-agent'), ...sources('vsock-shim')];

describe('architecture', () => {
  it('dependencies flow one way: the core folders (verify, protocol, policy, kms, store, audit, nonce, aws) never import the service layer above them', () => {
    // aws/: what every DynamoDB-backed part shares (table creation), importing only the SDK and lib/.
    const core = ['verify', 'protocol', 'policy', 'kms', 'store', 'audit', 'nonce', 'aws'].map((d) => `broker/${d}/`);
    // Leaf utilities the core may use besides each other and lib/: the logger and the token bucket.
    const leaves = new Set(['broker/log.js', 'broker/rate-limit.js']);
    let checked = 0;
    for (const file of sources('broker').filter((f) => core.some((c) => f.startsWith(c)))) {
      for (const target of internalTargets(file)) {
        checked++;
        const ok = core.some((c) => target.startsWith(c)) || target.startsWith('lib/') || leaves.has(target);
        expect(ok, `${file} -> ${target}`).toBe(true);
      }
    }
    expect(checked).toBeGreaterThan(20);
    expect(sources('broker/aws').flatMap(internalTargets).filter((t) => !t.startsWith('lib/'))).toEqual([]);
  });

  it('sees the imports it checks', () => {
    expect(internalTargets('broker/verify/verify.ts')).toContain('broker/verify/chain.js');
    expect(imports('broker/delegation/token.ts')).toContain('jose');
    expect(sources('broker').length).toBeGreaterThan(20);
  });

  it('broker/verify imports nothing from the rest of the project but the error base and the code list, and does no I/O', () => {
    // lib/coded-error.ts is the one error base (it imports nothing at all, checked below): verify's errors extend
    // it like every other error. Nothing else of lib/ (durable-fs does I/O) is open to verify. broker/protocol/codes.ts
    // declares the attestation codes once for verify and the broker API (it imports nothing either, checked below).
    const open = new Set(['lib/coded-error.js', 'broker/protocol/codes.js']);
    for (const file of sources('broker/verify')) {
      for (const target of internalTargets(file)) expect(target.startsWith('broker/verify/') || open.has(target), `${file} -> ${target}`).toBe(true);
      for (const spec of imports(file).filter((s) => !s.startsWith('.'))) {
        expect(['node:crypto', 'cbor-x'], `${file} imports ${spec}`).toContain(spec);
      }
    }
  });

  it('the broker does not depend on the CLI, the agent or the enclave plumbing', () => {
    for (const file of sources('broker')) {
      for (const target of internalTargets(file)) {
        expect(target.startsWith('cli/') || target.startsWith('enclave-agent/') || target.startsWith('vsock-shim/'), `${file} -> ${target}`).toBe(false);
      }
    }
  });

  it('keygate/testing loads only runtime dependencies (no vitest, fast-check or other devDependency), and nothing shipped for production imports it', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };
    const packageName = (spec: string): string => spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');
    const graph = staticGraph('testing/index.ts');
    expect(graph.files).toContain('broker/broker.ts');
    expect(graph.files).toContain('vsock-shim/simulator/nsm-simulator.ts');
    for (const spec of graph.packages) {
      expect(spec.startsWith('node:') || packageName(spec) in pkg.dependencies, `testing/ loads ${spec}`).toBe(true);
      expect(packageName(spec) in pkg.devDependencies, `testing/ loads the development dependency ${spec}`).toBe(false);
    }
    // On demand too: no import() of a test tool anywhere under testing/.
    for (const file of sources('testing')) for (const spec of imports(file)) expect(/^(vitest|fast-check|tsx|yaml|typescript)(\/|$)/.test(spec), `${file} imports ${spec}`).toBe(false);
    for (const file of ['broker', 'cli', 'enclave-agent', 'vsock-shim', 'lib'].flatMap(sources).concat('index.ts')) {
      for (const target of internalTargets(file)) expect(target.startsWith('testing/'), `${file} -> ${target}`).toBe(false);
    }
    for (const entry of ['index.ts', 'enclave-agent/index.ts']) expect([...staticGraph(entry).files].filter((f) => f.startsWith('testing/')), entry).toEqual([]);
  });

  it('enclave-agent and vsock-shim never import the broker (the agent only its wire contract), hono or the AWS SDK', () => {
    for (const file of [...sources('enclave-agent'), ...sources('vsock-shim')]) {
      const allowed = (target: string): boolean => file.startsWith('enclave-agent/') && target.startsWith('broker/protocol/');
      for (const target of internalTargets(file)) expect((target.startsWith('broker/') && !allowed(target)) || target.startsWith('cli/'), `${file} -> ${target}`).toBe(false);
      for (const spec of imports(file)) expect(/^(hono|@hono\/|@aws-sdk\/)/.test(spec), `${file} imports ${spec}`).toBe(false);
    }
    expect(sources('enclave-agent').flatMap(internalTargets)).toContain('broker/protocol/index.js');
  });

  it('broker/protocol imports nothing: no other project module, no package, no node builtin', () => {
    expect(sources('broker/protocol').length).toBeGreaterThan(0);
    for (const file of sources('broker/protocol')) {
      for (const target of internalTargets(file)) expect(target.startsWith('broker/protocol/'), `${file} -> ${target}`).toBe(true);
      for (const spec of imports(file).filter((s) => !s.startsWith('.'))) expect.fail(`${file} imports ${spec}`);
    }
  });

  it('lib/ is a leaf: it imports nothing from the project and no package (node builtins only), so every part may share it', () => {
    expect(sources('lib').length).toBeGreaterThan(0);
    for (const file of sources('lib')) {
      for (const spec of imports(file)) expect(spec.startsWith('node:'), `${file} imports ${spec}`).toBe(true);
    }
    expect(imports('lib/coded-error.ts')).toEqual([]);
    expect(internalTargets('vsock-shim/simulator/pki-store.ts')).toContain('lib/durable-fs.js');
    expect(internalTargets('broker/signing-key.ts')).toContain('lib/durable-fs.js');
  });

  it('domain operations (broker/ops, broker/eif, broker/state.ts) load neither hono nor the AWS SDK (aws-kms only on demand)', () => {
    const entries = [...sources('broker/ops'), ...sources('broker/eif'), 'broker/state.ts'];
    expect(entries.length).toBeGreaterThan(4);
    for (const entry of entries) {
      const { files, packages } = staticGraph(entry);
      for (const spec of packages) expect(HEAVY.test(spec), `${entry} loads ${spec}`).toBe(false);
      for (const file of ['broker/broker.ts', 'broker/server.ts', 'broker/kms/aws-kms.ts']) expect(files.has(file), `${entry} loads ${file}`).toBe(false);
    }
    expect(staticGraph('broker/state.ts').files).toContain('broker/kms/local.ts');
  });

  it('the CLI loads a command only when it runs, and only the broker-running commands load the broker service', () => {
    const main = staticGraph('cli/main.ts');
    expect([...main.files].filter((f) => f.startsWith('cli/commands/'))).toEqual([]);
    for (const file of sources('cli')) {
      const runsBroker = ['cli/commands/broker.ts', 'cli/commands/demo.ts'].includes(file);
      if (!runsBroker) expect(internalTargets(file), file).not.toContain('broker/broker.js');
    }
    for (const command of ['verify', 'list', 'secrets', 'record', 'eif', 'audit', 'store']) {
      const { packages } = staticGraph(`cli/commands/${command}.ts`);
      for (const spec of packages) expect(HEAVY.test(spec), `keygate ${command} loads ${spec}`).toBe(false);
    }
  });

  it('release depends on the store, audit and key-provider interfaces, never on their implementations', () => {
    const release = [...sources('broker/release'), 'broker/release.ts'];
    const implementations = ['broker/store/file-store.js', 'broker/store/open-store.js', 'broker/audit/log.js', 'broker/kms/aws-kms.js', 'broker/kms/local.js', 'broker/kms/registry.js', 'broker/nonce/memory-registry.js', 'broker/nonce/dynamodb-registry.js', 'broker/nonce/open-registry.js'];
    for (const file of release) for (const target of internalTargets(file)) expect(implementations, `${file} -> ${target}`).not.toContain(target);
    expect(internalTargets('broker/release.ts')).toEqual(expect.arrayContaining(['broker/store/store.js', 'broker/audit/sink.js', 'broker/kms/provider.js', 'broker/nonce/registry.js']));
  });

  it('interface modules import no implementation: store.ts, sink.ts, provider.ts and nonce/registry.ts reach only policy types and the lib/ leaves (PCR vocabulary, error base, AWS settings types)', () => {
    for (const file of ['broker/store/store.ts', 'broker/audit/sink.ts', 'broker/kms/provider.ts', 'broker/nonce/registry.ts']) {
      for (const target of internalTargets(file)) expect(target.startsWith('broker/policy/') || ['lib/pcrs.js', 'lib/coded-error.js', 'lib/aws-settings.js'].includes(target), `${file} -> ${target}`).toBe(true);
      expect(imports(file).filter((s) => !s.startsWith('.')), file).toEqual([]);
    }
  });

  it('only the factories build implementations: FileStore in open-store.ts, key providers in kms/registry.ts, AuditLog in the composition root', () => {
    const builders: Record<string, string> = {
      FileStore: 'broker/store/open-store.ts',
      LocalKeyProvider: 'broker/kms/registry.ts',
      AwsKmsKeyProvider: 'broker/kms/registry.ts',
      AuditLog: 'broker/audit/open-sink.ts',
      MemoryNonceRegistry: 'broker/nonce/open-registry.ts',
    };
    let seen = 0;
    for (const file of runtimeSources()) {
      for (const { names } of valueImports(file)) {
        for (const name of names.filter((n) => n in builders)) {
          seen++;
          expect(file, `${file} imports ${name}`).toBe(builders[name]);
        }
      }
    }
    expect(seen).toBe(4);
    // The AWS KMS provider is loaded on demand (the SDK is most of the module graph), and only by the registry.
    const loadsAwsKms = [...runtimeSources(), ...sources('cli')].filter((f) => /import\(\s*['"][^'"]*aws-kms\.js['"]\s*\)/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(loadsAwsKms).toEqual(['broker/kms/registry.ts']);
    // Likewise the DynamoDB store: only the store factory loads it, on demand (a file store never loads the SDK).
    const loadsDynamoStore = [...runtimeSources(), ...sources('cli')].filter((f) => /dynamodb-store\.js['"]/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(loadsDynamoStore).toEqual(['broker/store/open-store.ts']);
    expect(staticGraph('broker/store/open-store.ts').packages.has('@aws-sdk/client-dynamodb')).toBe(false);
    // And the DynamoDB nonce registry: loaded on demand by its factory only, so a broker on the memory
    // registry (and any command that opens a config) never loads @aws-sdk/client-dynamodb.
    const loadsDynamoNonces = [...runtimeSources(), ...sources('cli')].filter((f) => /import\(\s*['"][^'"]*dynamodb-registry\.js['"]\s*\)/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(loadsDynamoNonces).toEqual(['broker/nonce/open-registry.ts']);
    // And the DynamoDB audit sink: only the audit factory loads it, on demand (a broker on the file log never loads the SDK).
    const loadsDynamoAudit = [...runtimeSources(), ...sources('cli')].filter((f) => /import\(\s*['"][^'"]*dynamodb-sink\.js['"]\s*\)/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(loadsDynamoAudit).toEqual(['broker/audit/open-sink.ts']);
    expect(staticGraph('broker/audit/open-sink.ts').packages.has('@aws-sdk/client-dynamodb')).toBe(false);
    for (const entry of ['broker/nonce/open-registry.ts', 'broker/config.ts']) {
      for (const spec of staticGraph(entry).packages) expect(HEAVY.test(spec), `${entry} loads ${spec}`).toBe(false);
    }
  });

  it('the shared quarantine: only its factory loads the DynamoDB implementation (on demand); release sees the QuarantineStore interface and the coded error only', () => {
    const loadsDynamoQuarantine = [...runtimeSources(), ...sources('cli')].filter((f) => /dynamodb-quarantine\.js['"]/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(loadsDynamoQuarantine).toEqual(['broker/quarantine/open-quarantine.ts']);
    expect(readFileSync(join(ROOT, 'broker/quarantine/open-quarantine.ts'), 'utf8')).not.toMatch(/^import[^;]*dynamodb-quarantine\.js/m);
    for (const entry of ['broker/quarantine/open-quarantine.ts', 'broker/quarantine/store.ts', 'broker/state.ts']) {
      for (const spec of staticGraph(entry).packages) expect(HEAVY.test(spec), `${entry} loads ${spec}`).toBe(false);
    }
    // The interface module (settings and the error) reaches only the error base; no core folder imports the service layer.
    expect(internalTargets('broker/quarantine/store.ts').sort()).toEqual(['lib/aws-settings.js', 'lib/coded-error.js']);
    for (const file of sources('broker/quarantine')) {
      for (const target of internalTargets(file)) {
        const ok = ['broker/quarantine/', 'broker/nonce/', 'lib/'].some((p) => target.startsWith(p)) || target === 'broker/rate-limit.js';
        expect(ok, `${file} -> ${target}`).toBe(true);
      }
    }
    const release = [...sources('broker/release'), 'broker/release.ts'];
    for (const file of release) {
      for (const target of internalTargets(file)) expect(['broker/quarantine/open-quarantine.js', 'broker/quarantine/dynamodb-quarantine.js'], `${file} -> ${target}`).not.toContain(target);
    }
    expect(internalTargets('broker/release.ts')).toContain('broker/quarantine/store.js');
  });

  it('shared keys: the DynamoDB key source (and with it the AWS SDK) loads only on demand from its factory; broker/keys reaches no service layer', () => {
    const all = [...runtimeSources(), ...sources('cli')];
    const loadsDynamoKeys = all.filter((f) => /dynamodb-keys\.js['"]/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(loadsDynamoKeys).toEqual(['broker/keys/open-key-source.ts']);
    expect(readFileSync(join(ROOT, 'broker/keys/open-key-source.ts'), 'utf8')).toMatch(/import\(\s*'\.\/dynamodb-keys\.js'\s*\)/);
    for (const entry of ['broker/keys/open-key-source.ts', 'broker/keys/key-source.ts', 'broker/broker.ts']) {
      for (const spec of staticGraph(entry).packages) expect(/^@aws-sdk\//.test(spec), `${entry} loads ${spec}`).toBe(false);
    }
    // The keys are loaded through the factory only: nothing else reads or creates the key files any more.
    expect(internalTargets('broker/broker.ts')).toContain('broker/keys/open-key-source.js');
    for (const file of runtimeSources().filter((f) => !f.startsWith('broker/keys/') && !f.startsWith('broker/kms/') && f !== 'broker/signing-key.ts')) {
      expect(readFileSync(join(ROOT, file), 'utf8'), file).not.toMatch(/\bloadOrCreate(?:SigningKey|KeyFile)\b/);
    }
    // The interface names the keys and their error; only the implementations depend on storage.
    expect(internalTargets('broker/keys/key-source.ts').sort()).toEqual(['broker/signing-key.js', 'lib/aws-settings.js', 'lib/coded-error.js']);
    const allowed = (t: string): boolean => t.startsWith('broker/keys/') || t.startsWith('lib/') || t === 'broker/signing-key.js' || t === 'broker/kms/local.js';
    for (const file of sources('broker/keys')) for (const target of internalTargets(file)) expect(allowed(target), `${file} -> ${target}`).toBe(true);
  });

  it('provider names are declared once (PROVIDER_NAMES), and shutdown needs no cast to a concrete provider', () => {
    const declaring = runtimeSources().filter((f) => /type ProviderName\s*=/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(declaring).toEqual(['broker/policy/types.ts']);
    const unions = [...runtimeSources(), ...sources('cli')].filter((f) => /'local'\s*\|\s*'aws-kms'|'aws-kms'\s*\|\s*'local'/.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(unions).toEqual([]);
    expect(readFileSync(join(ROOT, 'broker/broker.ts'), 'utf8')).not.toMatch(/as\s+AwsKmsKeyProvider/);
  });

  it('the release pipeline writes the audit in one place (#record) and never swallows a failure', () => {
    const text = readFileSync(join(ROOT, 'broker/release.ts'), 'utf8');
    const start = text.indexOf('async #record(');
    const end = text.indexOf('\n  }\n', start);
    expect(start).toBeGreaterThan(0);
    const writes = [...text.matchAll(/\.append(?:Refusal)?\(/g)].map((m) => m.index);
    expect(writes.length).toBeGreaterThanOrEqual(3);
    for (const at of writes) expect(at > start && at < end, `audit write at offset ${at} outside #record`).toBe(true);
    expect(text).not.toMatch(/\.catch\(\s*\(\)\s*=>\s*\{\s*\}\s*\)/);
    for (const file of sources('broker/release')) expect(internalTargets(file).filter((t) => t.startsWith('broker/audit/')), file).toEqual([]);
  });

  it('the answer shape, claims and challenge format are declared only in broker/protocol', () => {
    for (const file of runtimeSources().filter((f) => !f.startsWith('broker/protocol/'))) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      expect(text, file).not.toMatch(/interface (ReleasedSecret|ReleaseClaims|SecretsAnswer|ChallengeAnswer)\b/);
      expect(text, file).not.toMatch(/(NONCE|MAC|TIME|RANDOM)_BYTES\s*=\s*\d/);
    }
  });

  it('PCR values have one shape (lib/pcrs.ts PcrValues); only the verifier, its --pcr options and the simulator keep the raw byte view', () => {
    const files = ['broker', 'cli', 'enclave-agent', 'vsock-shim', 'lib'].flatMap(sources).filter((f) => f !== 'lib/pcrs.ts');
    // The document's own view (the verifier reads it, the simulator writes it) and `keygate verify --pcr`, which builds VerifyOptions.
    const rawView = (f: string): boolean => f.startsWith('broker/verify/') || f.startsWith('vsock-shim/simulator/') || f === 'cli/parse.ts';
    let users = 0;
    for (const file of files) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      // Index -> hex declared again: a Map, a number/string-keyed Record on a PCR line, string-key unions ('0' | '1').
      expect(text, `${file} declares a PCR map`).not.toMatch(/Map<number,\s*string>/);
      for (const line of text.split('\n').filter((l) => /pcr/i.test(l))) {
        expect(line, `${file} types PCRs as a plain record`).not.toMatch(/Record<\s*(?:number|string),\s*string/);
        expect(line, `${file} spells PCR indexes as a union`).not.toMatch(/'0'\s*\|\s*'1'|readonly '0'|Record<\s*0\s*\|/);
      }
      // Any other PCR type is derived from PcrValues.
      for (const m of text.matchAll(/type (\w*Pcrs?\w*)\s*=\s*([^;]+);/g)) expect(m[2], `${file}: ${m[1]}`).toMatch(/\bPcrValues</);
      // Bytes -> hex for PCRs happens in pcrsFromDocument only; the byte view stays in the verifier and the simulator.
      expect(text, `${file} converts PCR bytes to hex itself`).not.toMatch(/\.#?pcrs\b[^\n]*(?:toString\('hex'\)|\bhex\()/i);
      if (!rawView(file)) expect(text, `${file} keeps a PCR byte map`).not.toMatch(/(?:Map|Record)<number,\s*Uint8Array/);
      if (internalTargets(file).includes('lib/pcrs.js')) users++;
    }
    expect(readFileSync(join(ROOT, 'lib/pcrs.ts'), 'utf8')).toMatch(/export type PcrValues</);
    expect(users).toBeGreaterThanOrEqual(10);
  });

  it('validators are declared once: PCR/SHA-384 hex in lib/pcrs.ts, the stored ISO time in policy/schema.ts, HOST:PORT in lib/host-port.ts', () => {
    const files = ['broker', 'cli', 'enclave-agent', 'vsock-shim', 'lib'].flatMap(sources);
    const declaring = (pattern: RegExp): string[] => files.filter((f) => pattern.test(readFileSync(join(ROOT, f), 'utf8')));
    expect(declaring(/\[0-9a-f\]\{(?:64|96|128)\}/)).toEqual(['lib/pcrs.ts']);
    expect(declaring(/\\d\{4\}-\\d\{2\}-\\d\{2\}T/)).toEqual(['broker/policy/schema.ts']);
    // The bracketed IPv6 host of a HOST:PORT: one parser for listen, --allow, --listen tcp:, tcp: transports and brokerUrl.
    expect(declaring(/\\\[\(\[0-9a-fA-F:\]/)).toEqual(['lib/host-port.ts']);
    for (const file of ['broker/config.ts', 'vsock-shim/forwarder.ts', 'vsock-shim/transport/transport.ts', 'cli/commands/forward.ts', 'enclave-agent/agent.ts']) {
      expect(internalTargets(file), file).toContain('lib/host-port.js');
    }
  });

  it('no errno number is hard-coded in TypeScript: the addon throws system errors (code, errno), numbers come from os.constants', () => {
    const files = ['broker', 'cli', 'enclave-agent', 'vsock-shim'].flatMap(sources);
    expect(files).toContain('vsock-shim/vsock.ts');
    for (const file of files) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      expect(text, `${file} defines an errno constant`).not.toMatch(/\bE[A-Z]{3,}\s*=\s*-?\d+/);
      expect(text, `${file} names an error by its errno number`).not.toMatch(/ERRNO_|errno \$\{/);
    }
  });

  it('every error class extends the one base (lib/coded-error.ts CodedError) and names itself', () => {
    const files = [...runtimeSources(), ...sources('cli'), ...sources('lib'), ...sources('bench'), 'index.ts'];
    const parent = new Map<string, string>();
    const declaredIn = new Map<string, string>();
    for (const file of files) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const m of text.matchAll(/\bclass\s+(\w+)(?:<[^>{]*(?:<[^>{]*>[^>{]*)*>)?\s+extends\s+(\w+)/g)) {
        parent.set(m[1]!, m[2]!);
        declaredIn.set(m[1]!, file);
      }
    }
    // Only the base extends a built-in error class.
    const extendsBuiltin = [...parent].filter(([, base]) => /^(|Type|Range|Syntax|Reference|Eval|URI|Aggregate)Error$/.test(base));
    expect(extendsBuiltin.map(([name]) => `${name} in ${declaredIn.get(name)}`)).toEqual(['CodedError in lib/coded-error.ts']);
    const chain = (name: string): string[] => {
      const base = parent.get(name);
      return base === undefined ? [] : [base, ...chain(base)];
    };
    const errorClasses = [...parent.keys()].filter((name) => name !== 'CodedError' && chain(name).some((b) => b.endsWith('Error')));
    expect(errorClasses.length).toBeGreaterThan(20);
    for (const name of errorClasses) {
      expect(chain(name), `${name} in ${declaredIn.get(name)}`).toContain('CodedError');
      // Tests and callers rely on `name` (String(err), isAttestationError across module copies).
      const text = readFileSync(join(ROOT, declaredIn.get(name)!), 'utf8');
      expect(text, `${name} sets its own name`).toMatch(new RegExp(`class ${name}\\b[^{]*\\{\\s*override readonly name(?::\\s*string)?\\s*=\\s*'${name}';`));
    }
    const namedLikeErrors = [...parent.keys()].filter((n) => n.endsWith('Error') && n !== 'CodedError');
    for (const name of namedLikeErrors) expect(errorClasses, `${name} is named like an error but is not one`).toContain(name);
  });

  it('HTTP statuses live at the HTTP boundary only: one map from code to status (broker/http-status.ts), used by the server', () => {
    for (const file of [...runtimeSources(), ...sources('cli'), ...sources('lib')].filter((f) => f !== 'broker/http-status.ts')) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      expect(text, `${file} maps an error code to an HTTP status`).not.toMatch(/\b[A-Z][A-Z_]{3,}:\s*[45]\d\d\b/);
      expect(text, `${file}: an error carries an HTTP status`).not.toMatch(/\bget status\(\)|err\.status\b/);
    }
    expect(internalTargets('broker/server.ts')).toContain('broker/http-status.js');
    expect(readFileSync(join(ROOT, 'broker/server.ts'), 'utf8')).toMatch(/HTTP_STATUS\[err\.code\]/);
  });
});
