// `node --import ./test/support/module-log.mjs ...` with KEYGATE_MODULE_LOG=FILE: appends every module
// the process loads to FILE, one per line: ES modules (and packages imported from them) by URL through a
// load hook, and at exit every CommonJS file in require.cache (what CommonJS packages require in turn).
// Plain JavaScript: node loads it before any TypeScript tooling. Used by test/cli/startup-imports.test.ts.
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';

register('./module-log-hooks.mjs', import.meta.url);
const log = process.env.KEYGATE_MODULE_LOG;
if (log) {
  process.on('exit', () => {
    const cjs = Object.keys(createRequire(import.meta.url).cache);
    appendFileSync(log, cjs.map((f) => `cjs:${f}\n`).join(''));
  });
}
