import { mkdirSync, readFileSync, rmSync, readdirSync } from 'node:fs';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { keepSqliteObjects, openDatabase } from '../storage/sqlite.js';
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

/**
 * SQLite (better-sqlite3) in DATA_DIR/fairbot.db; images waiting for delivery in
 * DATA_DIR/images. Rows are written synchronously on purpose: a write is tens of
 * microseconds and a job is recorded before its user is told it is queued. Image files
 * (megabytes) are written off the event loop.
 */
export class JobStore {
  private readonly db: Database.Database;
  private readonly imageDir: string;
  private readonly stmts;

  constructor(dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    this.imageDir = join(dataDir, 'images');
    mkdirSync(this.imageDir, { recursive: true });
    this.db = openDatabase(join(dataDir, 'fairbot.db'));
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
      prune: this.db.prepare(
        `DELETE FROM jobs WHERE state IN ('delivered', 'failed', 'cancelled') AND updated_at < @before`,
      ),
    };
    keepSqliteObjects(...Object.values(this.stmts));
  }

  insert(id: string, requester: Requester, prompt: string, reply: Record<string, unknown>): void {
    this.stmts.insert.run({
      id,
      platform: requester.platform,
      user_id: requester.userId,
      user_name: requester.userName ?? null,
      channel_id: requester.channelId ?? null,
      prompt,
      reply: JSON.stringify(reply),
      now: Date.now(),
    });
  }

  markRunning(id: string): void {
    this.stmts.start.run({ id, now: Date.now() });
  }

  /** Back to the queue: the job did not finish before a shutdown. */
  markQueued(id: string): void {
    this.stmts.setState.run({ id, state: 'queued', error: null, now: Date.now() });
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
    await writeFile(tmp, image.bytes);
    await rename(tmp, join(this.imageDir, file));
    return file;
  }

  /**
   * Records the saved image, so a restart delivers it rather than generating it again.
   * False when the job is no longer running (delivered or cancelled meanwhile): the row
   * keeps its end, and the caller discards the file.
   */
  markGenerated(id: string, file: string, mime: GeneratedImage['mime']): boolean {
    return this.stmts.generated.run({ id, file, mime, now: Date.now() }).changes > 0;
  }

  /** Removes an image file no row points to (its job ended while it was being saved). */
  discardImage(file: string): void {
    rmSync(join(this.imageDir, file), { force: true });
  }

  markEnded(id: string, state: 'delivered' | 'failed' | 'cancelled', error?: string): void {
    this.removeImage(id);
    this.stmts.setState.run({ id, state, error: error ?? null, now: Date.now() });
  }

  updateReply(id: string, reply: Record<string, unknown>): void {
    this.stmts.reply.run({ id, reply: JSON.stringify(reply), now: Date.now() });
  }

  get(id: string): JobRecord | undefined {
    const row = this.stmts.get.get(id) as Row | undefined;
    return row && toRecord(row);
  }

  /** Jobs to pick up after a restart, in their original order. */
  unfinished(): JobRecord[] {
    return (this.stmts.unfinished.all() as Row[]).map(toRecord);
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
    const removed = this.stmts.prune.run({ before: Date.now() - maxAgeMs }).changes;
    const keep = new Set(this.unfinished().map((r) => r.imageFile).filter(Boolean));
    for (const file of readdirSync(this.imageDir)) {
      if (!keep.has(file)) rmSync(join(this.imageDir, file), { force: true });
    }
    return removed;
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  private removeImage(id: string): void {
    const record = this.get(id);
    if (record?.imageFile) rmSync(join(this.imageDir, record.imageFile), { force: true });
  }
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
