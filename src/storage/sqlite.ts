import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

/**
 * Node 24 aborts the process (SIGABRT, `Assertion failed: (env) != nullptr` in
 * RemoveEnvironmentCleanupHook) when the garbage collector frees a better-sqlite3 12 Database
 * or Statement at a moment without a JS context, which it does within a second of start
 * (WiseLibs/better-sqlite3#1515, closed unfixed; 13 fixes it but does not run on Node 20).
 * So none of them ever becomes garbage: databases and statements (prepared once, at
 * construction) are kept for the life of the process, even after close() (a few hundred
 * bytes each), and pragmas go through exec() (no Statement object).
 */
const keptForever: unknown[] = [];

/** Keeps better-sqlite3 objects from ever being garbage-collected (see above). */
export function keepSqliteObjects(...objects: unknown[]): void {
  keptForever.push(...objects);
}

/**
 * Opens DATA_DIR's SQLite database in WAL mode. `busyTimeoutMs` is how long a write waits for
 * another process's lock: better-sqlite3 waits on the event loop, so callers that must stay
 * responsive pass a short one and retry asynchronously (see `retryBusy`).
 */
export function openDatabase(file: string, opts: { busyTimeoutMs?: number } = {}): Database.Database {
  mkdirSync(dirname(file), { recursive: true });
  const db = new Database(file, { timeout: opts.busyTimeoutMs ?? 5_000 });
  keepSqliteObjects(db);
  // exec(), not pragma(): pragma() prepares a throwaway Statement (see keepSqliteObjects).
  db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;');
  return db;
}

/** True for SQLite's "another connection holds the lock" errors. */
export function isBusy(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED' || code === 'SQLITE_BUSY_SNAPSHOT';
}

/**
 * Runs a synchronous database action, retrying it off the event loop while the database is
 * locked by another process, until `signal` aborts (then the last busy error is thrown).
 */
export async function retryBusy<T>(action: () => T, signal?: AbortSignal, pauseMs = 25): Promise<T> {
  for (;;) {
    try {
      return action();
    } catch (error) {
      if (!isBusy(error) || signal?.aborted) throw error;
    }
    await new Promise<void>((resolve) => setTimeout(resolve, pauseMs));
  }
}
