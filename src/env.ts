import { existsSync } from 'node:fs';
import dotenv from 'dotenv';
import { ConfigError } from './config.js';
import { DataDirRefusal } from './storage/sqlite.js';

/** Reads `.env` when present; the real environment wins over the file. */
export function loadDotEnv(): void {
  if (existsSync('.env')) dotenv.config({ path: '.env', quiet: true });
}

/**
 * A bad configuration stops the process with exit code 2 and one line per bad variable, naming
 * it; so does a DATA_DIR this bot must not use (another bot holds it, its database lost its
 * state): a restart would not help either, and a supervisor should not loop on it.
 */
export function exitOnConfigError(error: unknown): never | void {
  if (error instanceof ConfigError) {
    for (const line of error.message.split('\n')) process.stderr.write(`fairbot: configuration error: ${line}\n`);
    process.exit(2);
  }
  if (error instanceof DataDirRefusal) {
    process.stderr.write(`fairbot: ${error.message}\n`);
    process.exit(2);
  }
}
