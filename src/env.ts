import { existsSync } from 'node:fs';
import dotenv from 'dotenv';
import { ConfigError } from './config.js';

/** Reads `.env` when present; the real environment wins over the file. */
export function loadDotEnv(): void {
  if (existsSync('.env')) dotenv.config({ path: '.env', quiet: true });
}

/** A bad configuration stops the process with exit code 2 and one line per bad variable, naming it. */
export function exitOnConfigError(error: unknown): never | void {
  if (error instanceof ConfigError) {
    for (const line of error.message.split('\n')) process.stderr.write(`fairbot: configuration error: ${line}\n`);
    process.exit(2);
  }
}
