import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';

/** The server this bot started, remembered in DATA_DIR so a restarted bot can report and stop it. */
export const serverRecordSchema = z.object({
  node: z.string(),
  hostAddress: z.string().optional(),
  programId: z.string().optional(),
  containerId: z.string().optional(),
  endpoint: z.string(),
  startedAt: z.string(),
  coldStartMs: z.number().optional(),
});
export type ServerRecord = z.infer<typeof serverRecordSchema>;

export class ServerRecordStore {
  private readonly file: string;
  private cached: ServerRecord | undefined | null = null;

  constructor(dataDir: string) {
    this.file = join(dataDir, 'gpu-server.json');
    mkdirSync(dataDir, { recursive: true });
  }

  load(): ServerRecord | undefined {
    if (this.cached !== null) return this.cached;
    try {
      const parsed = serverRecordSchema.safeParse(JSON.parse(readFileSync(this.file, 'utf8')));
      this.cached = parsed.success ? parsed.data : undefined;
    } catch {
      this.cached = undefined;
    }
    return this.cached;
  }

  save(record: ServerRecord): void {
    // Write then rename, so a crash mid-write never leaves half a record.
    const tmp = `${this.file}.tmp`;
    writeFileSync(tmp, JSON.stringify(record, null, 2));
    renameSync(tmp, this.file);
    this.cached = record;
  }

  clear(): void {
    rmSync(this.file, { force: true });
    this.cached = undefined;
  }
}
