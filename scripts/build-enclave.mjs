// Builds the measured enclave application as ONE file from `keygate/agent`
// alone: examples/enclave-app/server.mjs bundled with esbuild (pinned exactly
// in package.json) into dist-enclave/app.mjs, beside the broker key it trusts.
//
// The bundle holds only what the app reaches from its imports (the agent,
// vsock-shim, lib/, broker/protocol/ if used, jose, cbor-x), so nothing under
// broker/ or cli/, no hono and no AWS SDK can change its bytes, and so PCR0.
// Deterministic: same inputs, same bytes (no timestamps, paths relative to the
// checkout, no tsconfig.json lookup: the settings are written out here).
//
//   node scripts/build-enclave.mjs [--outdir DIR]   (npm run build:enclave)
//
// Writes DIR/app.mjs (the bundle), DIR/broker-key.jwk and DIR/app.meta.json
// (esbuild's metafile: every input, for review and for the tests; not shipped).
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { outdir: { type: 'string', default: join(root, 'dist-enclave') } } });
const outdir = resolve(values.outdir);
mkdirSync(outdir, { recursive: true });

const result = await build({
  absWorkingDir: root,
  entryPoints: ['examples/enclave-app/server.mjs'],
  outfile: join(outdir, 'app.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The app imports the agent by its package name; take it from the sources, not from a built dist/.
  alias: { 'keygate/agent': './enclave-agent/index.ts' },
  // Paths in the output (its `// file` comments) stay relative to the checkout even when node_modules is a link.
  preserveSymlinks: true,
  // Written out so that no tsconfig.json (present or not in a build context) changes the output.
  tsconfigRaw: { compilerOptions: { target: 'ES2022', useDefineForClassFields: true, verbatimModuleSyntax: true } },
  // cbor-x's optional native decoder: left out of the measured image (cbor-x falls back to its
  // JavaScript decoder when `require('cbor-extract')` fails, which it does next to the bundle).
  external: ['cbor-extract'],
  legalComments: 'eof',
  charset: 'utf8',
  sourcemap: false,
  metafile: true,
  logLevel: 'warning',
});
writeFileSync(join(outdir, 'app.meta.json'), `${JSON.stringify(result.metafile, null, 2)}\n`);
copyFileSync(join(root, 'examples/enclave-app/broker-key.jwk'), join(outdir, 'broker-key.jwk'));
process.stdout.write(`keygate: enclave bundle ${join(outdir, 'app.mjs')} (${Object.keys(result.metafile.inputs).length} inputs)\n`);
