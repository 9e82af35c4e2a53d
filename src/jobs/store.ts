import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, readdirSync, writeFileSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { DataDirRefusal, keepSqliteObjects, openDatabase, StorageError } from '../storage/sqlite.js';
import { OutcomeLedger, type EndState } from './ledger.js';
import type { GeneratedImage, JobState, Platform, Requester } from './types.js';

/** A job as it is kept in DATA_DIR, so a restart picks up where the bot stopped. */
export interface JobRecord {
  id: string;
  seq: number;
  requester: Requester;
  prompt: string;
  reply: Record<string, unknown>;
  state: JobState;
  attempts: number;
  createdAt: number;
  updatedAt: number;
  imageFile?: string;
  imageMime?: GeneratedImage['mime'];
  error?: string;
}

interface Row {
  id: string;
  seq: number;
  platform: Platform;
  user_id: string;
  user_name: string | null;
  channel_id: string | null;
  prompt: string;
  reply: string;
  state: JobState;
  attempts: number;
  created_at: number;
  updated_at: number;
  image_file: string | null;
  image_mime: GeneratedImage['mime'] | null;
  error: string | null;
}

const DAY_MS = 24 * 60 * 60 * 1000;

export interface JobStoreOptions {
  /**
   * How long a write waits for another process's lock, on the event loop (better-sqlite3
   * blocks): short, so a held lock costs a command 50 ms, not 5 s; callers retry off the loop.
   */
  busyTimeoutMs?: number;
  /** While writes fail, how often one is tried again (and the ledger moved in). */
  probeMs?: number;
  /** How often the WAL is copied into the database file (PRAGMA wal_checkpoint(PASSIVE)). */
  checkpointMs?: number;
}

/** What /healthz says about DATA_DIR. */
export interface StorageHealth {
  ok: boolean;
  reason?: string;
}

/**
 * SQLite (better-sqlite3) in DATA_DIR/fairbot.db; images waiting for delivery in
 * DATA_DIR/images. Rows are written synchronously on purpose: a write is tens of
 * microseconds and a job is recorded before its user is told it is queued. Image files
 * (megabytes) are written off the event loop.
 */
export class JobStore {
  /** DATA_DIR/fairbot.db: named in every storage error (logs, /healthz, the CLI). */
  readonly file: string;
  private readonly db: Database.Database;
  private readonly imageDir: string;
  private readonly stmts;
  private readonly ledger: OutcomeLedger;
  private readonly endRows;
  /** The last write that failed, until one succeeds again. */
  private failure: StorageError | undefined;
  private readonly busyTimeoutMs: number;
  private writesSinceCheckpoint = 0;
  private lastCheckpointAt = Date.now();
  private readonly maintenance: NodeJS.Timeout;

  constructor(dataDir: string, options: JobStoreOptions = {}) {
    mkdirSync(dataDir, { recursive: true });
    this.imageDir = join(dataDir, 'images');
    mkdirSync(this.imageDir, { recursive: true });
    this.file = join(dataDir, 'fairbot.db');
    this.busyTimeoutMs = options.busyTimeoutMs ?? 50;
    this.db = openDatabase(this.file, { busyTimeoutMs: this.busyTimeoutMs });
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        user_name TEXT,
        channel_id TEXT,
        prompt TEXT NOT NULL,
        reply TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        image_file TEXT,
        image_mime TEXT,
        error TEXT
      );
      CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
      CREATE TABLE IF NOT EXISTS store_marker (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        token TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        checked_at INTEGER NOT NULL
      );
    `);
    this.stmts = {
      insert: this.db.prepare(
        `INSERT INTO jobs (id, platform, user_id, user_name, channel_id, prompt, reply, state, attempts, created_at, updated_at)
         VALUES (@id, @platform, @user_id, @user_name, @channel_id, @prompt, @reply, 'queued', 0, @now, @now)`,
      ),
      setState: this.db.prepare(`UPDATE jobs SET state = @state, error = @error, updated_at = @now WHERE id = @id`),
      suspend: this.db.prepare(
        `UPDATE jobs SET state = 'queued', error = NULL, attempts = MAX(attempts - 1, 0), updated_at = @now WHERE id = @id AND state = 'running'`,
      ),
      start: this.db.prepare(`UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = @now WHERE id = @id`),
      generated: this.db.prepare(
        `UPDATE jobs SET state = 'generated', image_file = @file, image_mime = @mime, updated_at = @now WHERE id = @id AND state = 'running'`,
      ),
      reply: this.db.prepare(`UPDATE jobs SET reply = @reply, updated_at = @now WHERE id = @id`),
      get: this.db.prepare(`SELECT * FROM jobs WHERE id = ?`),
      unfinished: this.db.prepare(`SELECT * FROM jobs WHERE state IN ('queued', 'running', 'generated') ORDER BY seq`),
      prune: this.db.prepare(`DELETE FROM jobs WHERE state IN ('delivered', 'failed', 'cancelled') AND updated_at < @before`),
      marker: this.db.prepare(`SELECT token FROM store_marker WHERE id = 1`),
      createMarker: this.db.prepare(`INSERT INTO store_marker (id, token, created_at, checked_at) VALUES (1, @token, @now, @now)`),
      probe: this.db.prepare(`UPDATE store_marker SET checked_at = @now WHERE id = 1`),
    };
    this.endRows = this.db.transaction((ends: Array<{ id: string; state: EndState }>) => {
      for (const { id, state } of ends) this.endRow(id, state);
    });
    keepSqliteObjects(...Object.values(this.stmts), this.endRows);
    try {
      this.checkMarker(join(dataDir, 'fairbot.db.marker'));
    } catch (error) {
      this.db.close();
      throw error;
    }
    this.ledger = new OutcomeLedger(join(dataDir, 'fairbot.db.ends'));
    this.moveLedgerIn();
    this.maintenance = setInterval(() => this.maintain(options.checkpointMs ?? 60_000), options.probeMs ?? 1_000);
    this.maintenance.unref();
  }

  /**
   * A database that lost its state (emptied, replaced, its -wal file damaged) must not start as
   * an empty queue in silence: its marker row is made with the database and a marker file next
   * to it holds the same token; a marker file without its row means the jobs are gone.
   */
  private checkMarker(markerFile: string): void {
    const row = this.stmts.marker.get() as { token: string } | undefined;
    const expected = existsSync(markerFile) ? readFileSync(markerFile, 'utf8').trim() : undefined;
    if (row) {
      if (expected === undefined) writeFileSync(markerFile, `${row.token}\n`);
      else if (expected !== row.token) throw new DataDirRefusal(lostState(this.file, markerFile, 'is a different database'));
      return;
    }
    if (expected !== undefined) throw new DataDirRefusal(lostState(this.file, markerFile, 'has lost its state (no marker row)'));
    const token = randomBytes(8).toString('hex');
    this.write(() => this.stmts.createMarker.run({ token, now: Date.now() }));
    writeFileSync(markerFile, `${token}\n`);
  }

  /** Why DATA_DIR cannot be written right now, for /healthz; ok when the last write went through. */
  health(): StorageHealth {
    if (!this.failure) return { ok: true };
    const waiting = this.ledger.size > 0 ? `; ${this.ledger.size} job end(s) kept in ${this.ledger.file} until it can` : '';
    return { ok: false, reason: `database not writable: ${this.failure.message}${waiting}` };
  }

  /** Runs a write; a failure is remembered (health) and thrown as a StorageError naming the file. */
  private write<T>(action: () => T): T {
    let result: T;
    try {
      result = action();
    } catch (error) {
      this.failure = error instanceof StorageError ? error : new StorageError(this.file, error);
      // Once the lock is known to be held, writes fail at once instead of each blocking the event
      // loop for the busy timeout (twenty commands retrying would add up to seconds).
      if (this.failure.fault === 'busy') this.db.exec('PRAGMA busy_timeout = 0');
      throw this.failure;
    }
    this.writesSinceCheckpoint++;
    if (this.failure) {
      this.db.exec(`PRAGMA busy_timeout = ${this.busyTimeoutMs}`);
      this.failure = undefined;
      this.moveLedgerIn();
    }
    return result;
  }

  /** Ends kept in the ledger go into the database (at start, and when it can be written again). */
  private moveLedgerIn(): void {
    const ends = this.ledger.entries();
    if (ends.length === 0) return;
    try {
      this.write(() => this.endRows(ends));
      this.ledger.clear();
    } catch {
      /* still not writable: the failure is recorded; the next probe tries again */
    }
  }

  /** Once a second: while writes fail, try one (it clears the failure); now and then, a checkpoint. */
  private maintain(checkpointMs: number): void {
    if (!this.db.open) return;
    if (this.failure) {
      try {
        this.write(() => this.stmts.probe.run({ now: Date.now() }));
      } catch {
        return;
      }
    }
    if (this.writesSinceCheckpoint > 0 && Date.now() - this.lastCheckpointAt >= checkpointMs) this.checkpoint();
  }

  /**
   * Copies the WAL into the database file, so the jobs do not live in the -wal file alone
   * (PASSIVE: never waits for readers or writers; exec, not pragma(): see keepSqliteObjects).
   */
  checkpoint(): void {
    try {
      this.db.exec('PRAGMA wal_checkpoint(PASSIVE)');
      this.writesSinceCheckpoint = 0;
      this.lastCheckpointAt = Date.now();
    } catch {
      /* a full disk or a held lock: the next round tries again */
    }
  }

  insert(id: string, requester: Requester, prompt: string, reply: Record<string, unknown>): void {
    this.write(() =>
      this.stmts.insert.run({
        id,
        platform: requester.platform,
        user_id: requester.userId,
        user_name: requester.userName ?? null,
        channel_id: requester.channelId ?? null,
        prompt,
        reply: JSON.stringify(reply),
        now: Date.now(),
      }),
    );
  }

  markRunning(id: string): void {
    this.write(() => this.stmts.start.run({ id, now: Date.now() }));
  }

  /** Back to the queue: the job did not finish before a shutdown. */
  markQueued(id: string): void {
    this.write(() => this.stmts.setState.run({ id, state: 'queued', error: null, now: Date.now() }));
  }

  /**
   * Back to the queue after a clean shutdown stopped its generation: that attempt is not
   * counted (only attempts that ended in a crash count toward dropping the job).
   */
  markSuspended(id: string): void {
    this.stmts.suspend.run({ id, now: Date.now() });
  }

  /**
   * Writes the image bytes to DATA_DIR/images (in libuv's thread pool: a 5 MB write on a
   * slow disk must not hold up the bot) and returns the file's name for markGenerated.
   */
  async saveImage(id: string, image: GeneratedImage): Promise<string> {
    const file = `${id}.${image.extension}`;
    const tmp = join(this.imageDir, `${file}.tmp`);
    try {
      await writeFile(tmp, image.bytes);
      await rename(tmp, join(this.imageDir, file));
    } catch (error) {
      rmSync(tmp, { force: true });
      throw new StorageError(tmp, error);
    }
    return file;
  }

  /**
   * Records the saved image, so a restart delivers it rather than generating it again.
   * False when the job is no longer running (delivered or cancelled meanwhile): the row
   * keeps its end, and the caller discards the file.
   */
  markGenerated(id: string, file: string, mime: GeneratedImage['mime']): boolean {
    return this.write(() => this.stmts.generated.run({ id, file, mime, now: Date.now() })).changes > 0;
  }

  /** Removes an image file no row points to (its job ended while it was being saved). */
  discardImage(file: string): void {
    rmSync(join(this.imageDir, file), { force: true });
  }

  /**
   * Records a job's end before its outcome is shown. When the database cannot take it, the end
   * goes to the ledger (no new disk space needed), so a restart neither runs nor posts the job
   * again; throws (a StorageError) only when neither could record it.
   */
  markEnded(id: string, state: EndState, error?: string): void {
    try {
      this.write(() => this.endRow(id, state, error));
    } catch (failure) {
      try {
        this.ledger.add(id, state);
      } catch {
        throw failure;
      }
    }
  }

  private endRow(id: string, state: EndState, error?: string): void {
    const image = this.get(id)?.imageFile;
    this.stmts.setState.run({ id, state, error: error ?? null, now: Date.now() });
    if (image) rmSync(join(this.imageDir, image), { force: true });
  }

  updateReply(id: string, reply: Record<string, unknown>): void {
    this.write(() => this.stmts.reply.run({ id, reply: JSON.stringify(reply), now: Date.now() }));
  }

  get(id: string): JobRecord | undefined {
    const row = this.stmts.get.get(id) as Row | undefined;
    return row && toRecord(row);
  }

  /** Jobs to pick up after a restart, in their original order (not those whose end waits in the ledger). */
  unfinished(): JobRecord[] {
    const ended = new Set(this.ledger.entries().map((e) => e.id));
    return (this.stmts.unfinished.all() as Row[]).filter((row) => !ended.has(row.id)).map(toRecord);
  }

  readImage(record: JobRecord): Buffer | undefined {
    if (!record.imageFile) return undefined;
    try {
      return readFileSync(join(this.imageDir, record.imageFile));
    } catch {
      return undefined;
    }
  }

  /** Drops ended jobs older than maxAgeMs and image files no job waits for. */
  prune(maxAgeMs = 7 * DAY_MS): number {
    const removed = this.write(() => this.stmts.prune.run({ before: Date.now() - maxAgeMs })).changes;
    const keep = new Set(
      this.unfinished()
        .map((r) => r.imageFile)
        .filter(Boolean),
    );
    for (const file of readdirSync(this.imageDir)) {
      if (!keep.has(file)) rmSync(join(this.imageDir, file), { force: true });
    }
    return removed;
  }

  close(): void {
    clearInterval(this.maintenance);
    if (!this.db.open) return;
    this.db.close();
    this.ledger.close();
  }
}

function lostState(database: string, markerFile: string, what: string): string {
  return `${database} ${what}, though ${markerFile} says it held fairbot's jobs: the database file was emptied or replaced, or its -wal file lost or damaged. Restore ${database} (with its -wal file) from a backup; or, to start with an empty queue, delete ${markerFile}.`;
}

function toRecord(row: Row): JobRecord {
  let reply: Record<string, unknown> = {};
  try {
    reply = JSON.parse(row.reply) as Record<string, unknown>;
  } catch {
    /* a damaged reply only costs the richer answer path */
  }
  return {
    id: row.id,
    seq: row.seq,
    requester: {
      platform: row.platform,
      userId: row.user_id,
      userName: row.user_name ?? undefined,
      channelId: row.channel_id ?? undefined,
    },
    prompt: row.prompt,
    reply,
    state: row.state,
    attempts: row.attempts,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    imageFile: row.image_file ?? undefined,
    imageMime: row.image_mime ?? undefined,
    error: row.error ?? undefined,
  };
}
