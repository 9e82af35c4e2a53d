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
  try {
    // exec(), not pragma(): pragma() prepares a throwaway Statement (see keepSqliteObjects).
    db.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;');
  } catch (error) {
    db.close();
    // "file is not a database" says nothing to an operator without the file's name.
    if (error instanceof Error) error.message = `${file}: ${error.message}`;
    throw error;
  }
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

/** Why DATA_DIR could not be written: the disk (or quota) is full, another process holds the lock, or anything else. */
export type StorageFault = 'full' | 'busy' | 'unwritable';

const FULL_CODES = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT', 'EFBIG']);

function storageFault(error: unknown): StorageFault {
  if (isBusy(error)) return 'busy';
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && FULL_CODES.has(code) ? 'full' : 'unwritable';
}

const FAULT_TEXT: Record<StorageFault, string> = {
  full: 'the disk is full',
  busy: 'another process holds its write lock',
  unwritable: 'it cannot be written',
};

/**
 * A write to DATA_DIR that did not happen. The message names the file and the cause, for
 * logs, /healthz and the CLI; users read a catalogue text instead (no paths in chat).
 * `code` is the underlying one (SQLITE_BUSY, SQLITE_FULL, ENOSPC...), so isBusy() works on it.
 */
export class StorageError extends Error {
  override name = 'StorageError';
  readonly fault: StorageFault;
  readonly code: string;

  constructor(
    readonly file: string,
    cause: unknown,
  ) {
    const code = String((cause as { code?: unknown } | null)?.code ?? 'unknown');
    const fault = storageFault(cause);
    super(`${file}: ${FAULT_TEXT[fault]} (${code}: ${cause instanceof Error ? cause.message : String(cause)})`, { cause });
    this.fault = fault;
    this.code = code;
  }
}

/**
 * DATA_DIR cannot be used by this process (another bot holds it, its database lost its
 * state): the bot stops with exit code 2 and this one line, like a configuration error.
 */
export class DataDirRefusal extends Error {
  override name = 'DataDirRefusal';
}
