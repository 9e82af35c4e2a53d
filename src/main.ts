#!/usr/bin/env node
import { startApp } from './app.js';
import { exitOnConfigError, loadDotEnv } from './env.js';

/** `npm start`: the bot, on Discord and/or Slack as configured. */
async function main(): Promise<void> {
  loadDotEnv();
  const app = await startApp({ env: process.env }).catch((error: unknown) => {
    exitOnConfigError(error);
    throw error;
  });
  const { logger } = app.services;

  // Input from users, platforms and servers must never take the bot down: log and go on.
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'));
  process.on('uncaughtException', (error) => logger.error({ err: error }, 'uncaught exception'));

  let signalled = false;
  const shutdown = (signal: string) => {
    if (signalled) return;
    signalled = true;
    logger.info({ signal }, 'shutting down');
    // docker stop waits 10 s before SIGKILL: finish within it whatever happens.
    setTimeout(() => process.exit(0), 9_500).unref();
    app.stop(8_000).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'error while shutting down');
        process.exit(0);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((error: unknown) => {
  process.stderr.write(`fairbot: could not start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
