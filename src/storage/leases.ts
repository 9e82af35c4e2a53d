import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { keepSqliteObjects } from './sqlite.js';

/** Who holds a lease: host, pid and a random part (a pid is reused after a restart). */
export function newHolderId(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

/**
 * A holder on this host whose process is gone (killed, crashed): its lease need not be waited
 * out. A pid reused by another process reads as alive, which only means waiting for the expiry.
 */
function isDeadLocalHolder(holder: string): boolean {
  const [host, pid] = holder.split(':');
  if (host !== hostname() || !pid || !/^\d+$/.test(pid)) return false;
  try {
    process.kill(Number(pid), 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

export interface LeaseRow {
  name: string;
  holder: string;
  /** Free text for people: what the holder is doing. */
  info: string | null;
  expiresAt: number;
}

/**
 * Leases in the shared SQLite database: a named right held by one process until it releases
 * it or stops renewing it (a crashed holder's lease simply expires). Used for "one process
 * starts a server at a time", "this process is using the server" and "one bot per DATA_DIR".
 * Every method is one short transaction; a locked database throws SQLITE_BUSY (see retryBusy).
 */
export class Leases {
  private readonly stmts;
  private readonly acquireTx;

  constructor(db: Database.Database) {
    db.exec(`CREATE TABLE IF NOT EXISTS leases (
      name TEXT PRIMARY KEY,
      holder TEXT NOT NULL,
      info TEXT,
      expires_at INTEGER NOT NULL
    )`);
    this.stmts = {
      get: db.prepare(`SELECT name, holder, info, expires_at AS expiresAt FROM leases WHERE name = ?`),
      put: db.prepare(
        `INSERT INTO leases (name, holder, info, expires_at) VALUES (@name, @holder, @info, @expiresAt)
         ON CONFLICT(name) DO UPDATE SET holder = excluded.holder, info = excluded.info, expires_at = excluded.expires_at`,
      ),
      renew: db.prepare(`UPDATE leases SET expires_at = @expiresAt WHERE name = @name AND holder = @holder`),
      release: db.prepare(`DELETE FROM leases WHERE name = ? AND holder = ?`),
      live: db.prepare(
        `SELECT name, holder, info, expires_at AS expiresAt FROM leases WHERE substr(name, 1, length(@prefix)) = @prefix AND expires_at > @now ORDER BY name`,
      ),
    };
    keepSqliteObjects(...Object.values(this.stmts));
    this.acquireTx = db.transaction((name: string, holder: string, ttlMs: number, info: string | null, now: number) => {
      const row = this.stmts.get.get(name) as LeaseRow | undefined;
      if (row && row.holder !== holder && row.expiresAt > now && !isDeadLocalHolder(row.holder)) return false;
      this.stmts.put.run({ name, holder, info, expiresAt: now + ttlMs });
      return true;
    });
    keepSqliteObjects(this.acquireTx);
  }

  /** Takes the lease when it is free, expired or already ours (then renews it). */
  acquire(name: string, holder: string, ttlMs: number, info?: string, now = Date.now()): boolean {
    return this.acquireTx.immediate(name, holder, ttlMs, info ?? null, now);
  }

  /** Extends a lease we hold; false when it is no longer ours (expired and taken). */
  renew(name: string, holder: string, ttlMs: number, now = Date.now()): boolean {
    return this.stmts.renew.run({ name, holder, expiresAt: now + ttlMs }).changes > 0;
  }

  release(name: string, holder: string): void {
    this.stmts.release.run(name, holder);
  }

  /** The unexpired holder of a lease, if any. */
  holderOf(name: string, now = Date.now()): LeaseRow | undefined {
    const row = this.stmts.get.get(name) as LeaseRow | undefined;
    return row && row.expiresAt > now ? row : undefined;
  }

  /** Unexpired leases whose name starts with `prefix`. */
  live(prefix: string, now = Date.now()): LeaseRow[] {
    return this.stmts.live.all({ prefix, now }) as LeaseRow[];
  }
}
