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

/**
 * A test file that fails to load (a mutant in module-level code makes an
 * import throw) is a failing test file for vitest, but the Stryker vitest
 * runner counts only the tests it collected: none, so the mutant "survived".
 * This reporter turns such a file into one failed test, so the mutant counts
 * as killed (as any plain `vitest run` would report it), and a dry run with
 * a file that cannot load fails instead of shrinking.
 */
class LoadFailureAsTest {
  onTestRunEnd(testModules) {
    for (const module of testModules) {
      const file = module.task;
      if (file.result?.state !== 'fail' || file.tasks.length > 0) continue;
      const message = file.result.errors?.[0]?.message ?? 'the test file failed to load';
      file.tasks.push({
        type: 'test',
        id: `${file.id}_load`,
        name: 'loads',
        mode: 'run',
        file,
        suite: file,
        meta: {},
        context: {},
        result: { state: 'fail', errors: [{ message: `test file failed to load: ${message}` }], duration: 0 },
      });
    }
  }
}

const config = mergeConfig(base, defineConfig({ test: { reporters: ['default'] } }));
// Replaced, not merged (mergeConfig would append to the project's include).
// The fixture guard always runs: without ../shared/fixtures the run fails instead of shrinking.
config.test.include = narrowed?.length ? [...narrowed, 'test/verify/fixtures-present.test.ts'] : COVERING_SUITES;
config.test.reporters = ['default', new LoadFailureAsTest()];

export default config;
