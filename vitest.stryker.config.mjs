// The vitest configuration Stryker runs (see stryker.config.mjs): the project's
// own, restricted to the suites that cover broker/verify and broker/policy.
// The set is chosen here rather than with Stryker's `testFiles`, because with
// `testFiles` Stryker 9.5.1 activates static mutants (module-level constants
// such as the schema's regexes) only after the module has loaded, so they all
// "survive" (stryker-js issue #6144). KEYGATE_MUTATION_TESTS (comma-separated
// globs) narrows the set further for a quick per-file run.
import { defineConfig, mergeConfig } from 'vitest/config';
import base from './vitest.config.ts';

const COVERING_SUITES = [
  'test/verify/**/*.test.ts',
  'test/policy/**/*.test.ts',
  'test/broker/policy.test.ts',
  'test/broker/baseline.test.ts',
];

const narrowed = process.env.KEYGATE_MUTATION_TESTS?.split(',').map((s) => s.trim()).filter(Boolean);

const config = mergeConfig(base, defineConfig({ test: { reporters: ['default'] } }));
// Replaced, not merged (mergeConfig would append to the project's include).
// The fixture guard always runs: without ../shared/fixtures the run fails instead of shrinking.
config.test.include = narrowed?.length ? [...narrowed, 'test/verify/fixtures-present.test.ts'] : COVERING_SUITES;
config.test.reporters = ['default'];

export default config;
