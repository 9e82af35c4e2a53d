import { defineConfig } from 'vitest/config';
import base from './vitest.config.js';

/**
 * The suite as StrykerJS runs it (stryker.config.mjs; Stryker runs one test thread per worker):
 * - without the global secret scan, which would gather the log lines of thousands of mutant
 *   runs in one directory (the scan belongs to `npm test`);
 * - without test/inference.test.ts: its 26 MB answer against INFER_TIMEOUT_S=1 times out on a
 *   loaded machine, and one test failing in Stryker's first run stops the whole run. It tests
 *   src/inference, which is not mutated.
 */
export default defineConfig({
  ...base,
  test: { ...base.test, globalSetup: [], exclude: ['test/inference.test.ts', 'node_modules/**'] },
});
