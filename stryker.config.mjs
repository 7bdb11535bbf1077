// Mutation testing of the verification core and the policy (issue 17).
// Run with `npm run mutation` (NOT part of `npm test` or CI: a full run takes
// most of an hour on two cores). Per-file while working, e.g.:
//   KEYGATE_MUTATION_TESTS=test/policy/schema.test.ts npx stryker run --mutate broker/policy/schema.ts
// Equivalent mutants (survivors that cannot change behaviour) are listed in
// stryker.equivalent-mutants.md beside this file; nothing is excluded here.

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  plugins: ['@stryker-mutator/vitest-runner'],
  // The covering suites are chosen in vitest.stryker.config.mjs, not with
  // `testFiles` (which leaves static mutants inactive: see that file).
  vitest: { configFile: 'vitest.stryker.config.mjs', related: false },
  mutate: ['broker/verify/**/*.ts', 'broker/policy/**/*.ts'],
  // In place: the real-document suites read ../shared/fixtures relative to the
  // work tree, which a sandbox copy would not have (test/verify/fixtures-present
  // fails the dry run if they are missing, rather than letting suites vanish).
  inPlace: true,
  tempDirName: '.stryker-tmp',
  // Only the mutated files get `// @ts-nocheck` (vitest does not type-check
  // anyway): in place, every file Stryker rewrites is restored from a backup,
  // which otherwise touched lib/ and test/ and dropped bin/keygate.js's exec bit.
  disableTypeChecks: 'broker/{verify,policy}/**/*.ts',
  concurrency: 1,
  // The 9.5.1 vitest runner collects no per-test coverage under vitest 4 (every
  // mutant ran every test anyway), so say so: each mutant runs the whole set,
  // stopping at the first failure.
  coverageAnalysis: 'all',
  timeoutMS: 20_000,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 90, low: 80, break: null },
};
