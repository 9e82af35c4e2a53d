import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Leases, newHolderId } from './leases.js';
import { DataDirRefusal, openDatabase, retryBusy, StorageError } from './sqlite.js';

const INSTANCE_LEASE = 'instance';

/**
 * One bot per DATA_DIR: the bot holds the 'instance' lease in DATA_DIR/fairbot.db while it runs
 * and renews it every third of its life, so a bot that crashed (kill -9, power loss) frees
 * DATA_DIR within `ttlMs`. A second bot refuses to start (DataDirRefusal: exit code 2, one
 * line naming the holder); the CLI never takes this lease and runs beside the bot.
 */
export async function claimDataDir(dataDir: string, ttlMs: number, logger: Logger): Promise<{ release(): void }> {
  const file = join(dataDir, 'fairbot.db');
  // A short busy timeout: the heartbeat must not hold up the bot while another process has the lock.
  const db = openDatabase(file, { busyTimeoutMs: 50 });
  const leases = new Leases(db);
  const holder = newHolderId();
  const info = `pid ${process.pid} on ${hostname()}, started ${new Date().toISOString()}`;
  let acquired: boolean;
  try {
    acquired = await retryBusy(() => leases.acquire(INSTANCE_LEASE, holder, ttlMs, info), AbortSignal.timeout(ttlMs));
  } catch (error) {
    db.close();
    throw new StorageError(file, error);
  }
  if (!acquired) {
    const current = leases.holderOf(INSTANCE_LEASE);
    db.close();
    const leftS = current ? Math.ceil((current.expiresAt - Date.now()) / 1000) : 0;
    throw new DataDirRefusal(
      `DATA_DIR ${dataDir} is in use by another fairbot (${current?.info ?? current?.holder ?? 'unknown holder'}); stop that one first (if it crashed, its claim expires within ${leftS} s)`,
    );
  }
  const log = logger.child({ component: 'instance', holder });
  log.info({ dataDir, ttlMs }, 'holding DATA_DIR for this bot');
  let lost = false;
  const heartbeat = setInterval(
    () => {
      try {
        const held = leases.acquire(INSTANCE_LEASE, holder, ttlMs, info);
        if (!held && !lost)
          log.error({ file, holder: leases.holderOf(INSTANCE_LEASE)?.info }, 'another fairbot took DATA_DIR after this one could not renew its claim');
        lost = !held;
      } catch (error) {
        // A full disk or a held lock: the claim lasts ttlMs, the next beat tries again.
        log.warn({ err: error, file }, 'could not renew the claim on DATA_DIR');
      }
    },
    Math.max(100, Math.floor(ttlMs / 3)),
  );
  heartbeat.unref();
  return {
    release() {
      clearInterval(heartbeat);
      if (!db.open) return;
      try {
        leases.release(INSTANCE_LEASE, holder);
      } catch (error) {
        log.warn({ err: error, file }, 'could not release the claim on DATA_DIR; it expires by itself');
      }
      db.close();
    },
  };
}
