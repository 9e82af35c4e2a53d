import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Installs from the npm registry, for minutes: `npm run test:install` (vitest.install.config.ts).
    exclude: [...configDefaults.exclude, 'test/install/**'],
    // Scans the whole suite's captured logs and posted messages for the test secrets.
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Stand-ins bind real sockets; two cores, so keep the fan-out modest.
    pool: 'forks',
    maxWorkers: 2,
  },
});
