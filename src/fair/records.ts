import { randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import { z } from 'zod';
import { Leases } from '../storage/leases.js';
import { keepSqliteObjects, openDatabase } from '../storage/sqlite.js';

/**
 * Where a server is in its life. Each phase is committed before the side effect that follows
 * it, so whoever reads the record (this process after a restart, the CLI, another bot) can
 * finish the transition that was left open:
 *   creating  the start program is about to be sent (its id not known yet)
 *   created   Fair accepted the start program (program id known)
 *   started   its Create command named the container (container id known)
 *   ready     the diffusion server answered
 *   stopping  a Kill was sent
 * and "gone" is no record at all, written only after Fair confirmed the Kill.
 */
const SERVER_PHASES = ['creating', 'created', 'started', 'ready', 'stopping'] as const;
export type ServerPhase = (typeof SERVER_PHASES)[number];

export const serverRecordSchema = z.object({
  /** Tells successive servers apart, so a late write about one never lands on the next. */
  id: z.string(),
  node: z.string(),
  hostAddress: z.string().optional(),
  endpoint: z.string(),
  phase: z.enum(SERVER_PHASES),
  programId: z.string().optional(),
  containerId: z.string().optional(),
  startedAt: z.string(),
  coldStartMs: z.number().optional(),
  /** Given up (a kill, a timeout, a failed call): its container is killed as soon as Fair names it. */
  abandoned: z.boolean().default(false),
  /** Found answering on our port without a container id of ours: used, never claimed stoppable. */
  external: z.boolean().default(false),
  /**
   * A start request of this server got a 5xx or no answer and was sent again: Fair may have made
   * a second program the bot has no id for (no API lists a node's programs). Said on every stop.
   */
  startAnswerLost: z.boolean().default(false),
  /** The lease holder (host:pid:random) of the process that started it. */
  startedBy: z.string().optional(),
});
export type ServerRecord = z.infer<typeof serverRecordSchema>;
type Defaulted = 'abandoned' | 'external' | 'startAnswerLost';
export type NewServerRecord = Omit<ServerRecord, 'id' | Defaulted> & Partial<Pick<ServerRecord, Defaulted>>;

/** One server today (MAX_SERVERS=1): its slot in the table. */
const SLOT = 'gpu-0';

/**
 * The servers this bot started, in DATA_DIR/fairbot.db beside the jobs, shared by every process
 * on that DATA_DIR (the bot and any number of CLI runs). Read fresh on every call, never cached:
 * another process may have changed it. Writes are single statements (atomic); a locked
 * database throws SQLITE_BUSY at once (busy timeout 0) so callers retry off the event loop.
 */
export class ServerRecords {
  readonly leases: Leases;
  readonly file: string;
  private readonly db: Database.Database;
  private readonly stmts;
  private readonly updateTx;

  constructor(dataDir: string) {
    this.file = join(dataDir, 'fairbot.db');
    this.db = openDatabase(this.file, { busyTimeoutMs: 0 });
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS servers (slot TEXT PRIMARY KEY, record TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS server_facts (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    `);
    this.leases = new Leases(this.db);
    this.stmts = {
      get: this.db.prepare(`SELECT record FROM servers WHERE slot = ?`),
      insert: this.db.prepare(`INSERT OR REPLACE INTO servers (slot, record) VALUES (?, ?)`),
      // Only the same server (same id): a late write about an old server never lands on a new one.
      update: this.db.prepare(`UPDATE servers SET record = @record WHERE slot = @slot AND json_extract(record, '$.id') = @id`),
      remove: this.db.prepare(`DELETE FROM servers WHERE slot = @slot AND json_extract(record, '$.id') = @id`),
      fact: this.db.prepare(`SELECT value FROM server_facts WHERE key = ?`),
      setFact: this.db.prepare(`INSERT OR REPLACE INTO server_facts (key, value) VALUES (?, ?)`),
    };
    keepSqliteObjects(...Object.values(this.stmts));
    // Read and write in one transaction: another process may change the record in between.
    this.updateTx = this.db.transaction((id: string, patch: Partial<Omit<ServerRecord, 'id'>>) => {
      const current = this.get();
      if (current?.id !== id) return undefined;
      const next = serverRecordSchema.parse({ ...current, ...patch });
      this.stmts.update.run({ slot: SLOT, id, record: JSON.stringify(next) });
      return next;
    });
    keepSqliteObjects(this.updateTx);
    this.importLegacyFile(dataDir);
  }

  get(): ServerRecord | undefined {
    const row = this.stmts.get.get(SLOT) as { record: string } | undefined;
    if (!row) return undefined;
    try {
      const parsed = serverRecordSchema.safeParse(JSON.parse(row.record));
      return parsed.success ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records a new server (the intent to start one), replacing whatever the slot held. */
  create(fields: NewServerRecord): ServerRecord {
    const record = serverRecordSchema.parse({ ...fields, id: randomUUID() });
    this.stmts.insert.run(SLOT, JSON.stringify(record));
    return record;
  }

  /** Changes the record of server `id`; undefined when that server's record is gone (or replaced). */
  update(id: string, patch: Partial<Omit<ServerRecord, 'id'>>): ServerRecord | undefined {
    return this.updateTx.immediate(id, patch);
  }

  /** Forgets server `id`: only once Fair confirmed it is gone (or nothing was ever created). */
  remove(id: string): void {
    this.stmts.remove.run({ slot: SLOT, id });
  }

  /** The last generation any process on this DATA_DIR finished, for /gpu status. */
  lastGeneration(): { at: Date; ms: number } | undefined {
    const row = this.stmts.fact.get('last-generation') as { value: string } | undefined;
    if (!row) return undefined;
    try {
      const { at, ms } = JSON.parse(row.value) as { at: number; ms: number };
      return { at: new Date(at), ms };
    } catch {
      return undefined;
    }
  }

  noteGeneration(ms: number, at = Date.now()): void {
    this.stmts.setFact.run('last-generation', JSON.stringify({ at, ms }));
  }

  close(): void {
    if (this.db.open) this.db.close();
  }

  /** Versions before 0.2 kept the record in DATA_DIR/gpu-server.json: carry it over once. */
  private importLegacyFile(dataDir: string): void {
    const legacy = join(dataDir, 'gpu-server.json');
    let text: string;
    try {
      text = readFileSync(legacy, 'utf8');
    } catch {
      return;
    }
    try {
      const old = JSON.parse(text) as Record<string, unknown>;
      if (!this.get() && typeof old.node === 'string' && typeof old.endpoint === 'string') {
        this.create({
          node: old.node,
          endpoint: old.endpoint,
          hostAddress: typeof old.hostAddress === 'string' ? old.hostAddress : undefined,
          programId: typeof old.programId === 'string' ? old.programId : undefined,
          containerId: typeof old.containerId === 'string' ? old.containerId : undefined,
          startedAt: typeof old.startedAt === 'string' ? old.startedAt : new Date().toISOString(),
          coldStartMs: typeof old.coldStartMs === 'number' ? old.coldStartMs : undefined,
          phase: typeof old.containerId === 'string' ? (typeof old.coldStartMs === 'number' ? 'ready' : 'started') : 'created',
        });
      }
    } catch {
      /* a damaged legacy file holds nothing we can use */
    }
    rmSync(legacy, { force: true });
  }
}
