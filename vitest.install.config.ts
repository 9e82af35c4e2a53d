import { defineConfig } from 'vitest/config';

/**
 * `npm run test:install`: installs the project as an operator would, in a temporary copy,
 * from the npm registry (minutes; CI runs it, `npm test` does not).
 */
export default defineConfig({
  test: {
    include: ['test/install/**/*.test.ts'],
    // Two installs, each compiling better-sqlite3: minutes on an idle machine, far more on a busy one.
    testTimeout: 60 * 60_000,
    hookTimeout: 60_000,
  },
});
