import { afterEach } from 'vitest';

/**
 * What a test starts is stopped after it, last started first, however the test ended. Call
 * once at the top of a suite file.
 */
export function cleanupAfterEach() {
  const cleanups: Array<() => unknown> = [];
  afterEach(async () => {
    for (const fn of cleanups.splice(0).reverse()) await fn();
  });
  return {
    /** Runs `fn` after the test. */
    defer(fn: () => unknown): void {
      cleanups.push(fn);
    },
    /** Resolves to what `starting` resolves to, and closes it after the test. */
    async closing<T extends { close(): unknown }>(starting: Promise<T>): Promise<T> {
      const started = await starting;
      cleanups.push(() => started.close());
      return started;
    },
  };
}
