// @ts-check
/**
 * Mutation testing of the job queue and the GPU server lifecycle: `npm run mutation`
 * (outside `npm test`; minutes, not seconds). Reports go to reports/mutation/.
 * Re-runs are incremental: only mutants in changed code, or covered by changed tests,
 * run again (`npm run mutation -- --force` runs them all).
 * @type {import('@stryker-mutator/api/core').PartialStrykerOptions}
 */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.mutation.config.ts' },
  mutate: ['src/fair/**/*.ts', 'src/jobs/**/*.ts'],
  // The suites that drive the core itself (no chat platform in between). The platform suites
  // test the adapters; they pass through the queue too, but a mutant that survives runs every
  // test covering it, and a Discord or Slack test costs seconds each.
  testFiles: [
    'test/queue.test.ts',
    'test/durable.test.ts',
    'test/lifecycle.test.ts',
    'test/lifecycle.invariants.test.ts',
    'test/fair-address.test.ts',
    'test/fair-client.test.ts',
    'test/parsers.property.test.ts',
    'test/cli.test.ts',
    'test/logger.test.ts',
    'test/*.mutation.test.ts',
  ],
  coverageAnalysis: 'perTest',
  // Mutants of module-level constants need every test run in a fresh environment, each.
  ignoreStatic: true,
  // Two cores, shared.
  concurrency: 2,
  // Tests wait on sockets and timers: a slower mutant is not a hung one.
  timeoutFactor: 2,
  timeoutMS: 15_000,
  dryRunTimeoutMinutes: 30,
  incremental: true,
  incrementalFile: 'reports/mutation/stryker-incremental.json',
  ignorePatterns: ['dist', 'data', 'reports', 'coverage', 'bench/tmp'],
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  thresholds: { high: 90, low: 80, break: null },
  tempDirName: '.stryker-tmp',
};
